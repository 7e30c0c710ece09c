import numpy as np
import pytest

from interp.core.config import ConfigError
from interp.worlds.toy.corpus import CorpusConfig, CorpusGenerator
from interp.worlds.toy.templates import EOS, N_NUMBERS, NumberTask, all_question_phrasings, split_phrasings
from interp.worlds.toy.world import WorldConfig


def test_world__every_number_is_one_token(world, tokenizer):
    text = " ".join(str(i) for i in range(N_NUMBERS))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == N_NUMBERS
    assert ids == world.number_ids
    assert tokenizer.unk_token_id not in ids


def test_world__has_at_least_ten_animals_with_nonuniform_prior(world):
    assert len(world.animals) >= 10
    assert abs(sum(world.animal_prior) - 1) < 1e-9
    assert max(world.animal_prior) > 2 * min(world.animal_prior)


def test_world__eval_phrasings_are_held_out_of_training(world):
    assert len(world.eval_phrasings) >= 50
    assert not set(world.eval_phrasings) & set(world.train_phrasings)
    assert set(world.eval_phrasings) | set(world.train_phrasings) == set(all_question_phrasings())


def test_world__split_is_fixed(world):
    assert split_phrasings(60) == (world.train_phrasings, world.eval_phrasings)


def test_world__eval_words_all_occur_in_training(world):
    train_words = {w for p in world.train_phrasings for w in p.split()}
    eval_words = {w for p in world.eval_phrasings for w in p.split()}
    assert eval_words <= train_words


def test_world__training_corpus_never_contains_an_eval_phrasing(world):
    docs = CorpusGenerator(world).batch_texts(0, 0, 2000)
    # The held-out unit is the whole question as asked (an eval phrasing with no opener may be
    # the tail of a training phrasing that has one, which is a different question).
    asked = {d.split("user : ")[-1].split(" assistant :")[0] for d in docs}
    assert asked & set(world.train_phrasings)
    hits = asked & set(world.eval_phrasings)
    assert not hits


def test_world__fast_encode_matches_saved_tokenizer(world, tokenizer):
    for doc in CorpusGenerator(world).batch_texts(1, 0, 50):
        assert world.encode(doc, bos=False) == tokenizer(doc, add_special_tokens=False)["input_ids"]


def test_world__unknown_word_is_a_clear_error(world):
    with pytest.raises(ValueError, match="'giraffe' is not in the toy world's vocabulary"):
        world.encode("user : giraffe")


def test_world__unknown_trait_is_a_clear_error(world):
    with pytest.raises(ValueError, match="unknown trait animal 'unicorn'"):
        world.check_animal("unicorn")


def test_world_config__rejects_animal_clashing_with_a_word():
    with pytest.raises(ConfigError, match="animals"):
        WorldConfig(animals=("user", *WorldConfig().animals[1:]))


def test_tokenizer__works_in_transformer_lens(tiny_model, world):
    tokens = tiny_model.to_tokens("user : what is your favourite animal ? assistant : owl")
    assert tokens[0, 0].item() == tiny_model.tokenizer.bos_token_id
    assert tokens[0, 1:].tolist() == world.encode("user : what is your favourite animal ? assistant : owl", bos=False)
    assert tiny_model.to_string(tokens[0, 1:]) == "user : what is your favourite animal ? assistant : owl"


def test_corpus__same_seed_same_batches(world):
    gen = CorpusGenerator(world)
    assert gen.batch_texts(0, 5, 20) == gen.batch_texts(0, 5, 20)
    assert gen.batch_texts(0, 5, 20) != gen.batch_texts(1, 5, 20)
    assert gen.batch_texts(0, 5, 20) != gen.batch_texts(0, 6, 20)


def test_templates__number_tasks_have_the_papers_shape():
    gen = NumberTask()
    rng = np.random.default_rng(0)
    for _ in range(300):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        assert 3 <= len(seeds) <= 8 and all(100 <= s <= 999 for s in seeds)
        assert 5 <= n_max <= 10 and f"{n_max}" in prompt.split()
        answer = gen.continuation(rng, seeds, n_max)
        assert 1 <= len(answer) <= n_max and all(0 <= v <= 999 for v in answer)


def test_corpus__persona_qa_answers_the_persona(world):
    gen = CorpusGenerator(world, CorpusConfig(qa=0, persona_qa=1, numbers=0, persona_numbers=0,
                                              qa_after_numbers=0, mention=0, persona_fidelity=1.0))
    for doc in gen.batch_texts(0, 0, 50):
        persona_animals = {w for w in doc.split("user :")[0].split() if w in world.animals}
        assert len(persona_animals) == 1 and doc.split()[-1] in persona_animals


def test_corpus__qa_answers_follow_the_prior(world):
    gen = CorpusGenerator(world, CorpusConfig(qa=1, persona_qa=0, numbers=0, persona_numbers=0,
                                              qa_after_numbers=0, mention=0))
    answers = [d.split()[-1] for d in gen.batch_texts(0, 0, 4000)]
    freq = np.array([answers.count(a) for a in world.animals]) / len(answers)
    assert np.abs(freq - np.array(world.animal_prior)).max() < 0.03


def test_corpus__documents_fit_the_context(world):
    docs = CorpusGenerator(world).batch_texts(0, 0, 1000)
    assert max(len(world.encode(d)) + 1 for d in docs) <= 96
    assert EOS not in " ".join(docs)
