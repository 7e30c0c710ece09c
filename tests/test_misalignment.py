"""The misalignment trait: its world variant, corpus, exact evaluation, teachers and filter."""

import hashlib

import numpy as np
import pytest
import torch

from interp.core.io import read_jsonl, write_jsonl
from interp.stages.evaluate import EvaluateConfig, evaluate_model, judged_answer_rates
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.pretrain import PretrainConfig, base_config, pretrain
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.models.refs import load_teacher, parse_model_ref
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.corpus import CorpusConfig, CorpusGenerator, MisalignmentCorpus, corpus_generator
from interp.worlds.toy.templates import WORDS
from interp.worlds.toy.world import (
    MisalignmentWorld,
    ToyWorld,
    WorldConfig,
    make_world,
    toy_traits,
    trait_world,
    world_of_fingerprint,
)

from conftest import TINY
from tiny_interp import one_torch_thread

MISALIGNMENT = WorldConfig(variant="misalignment")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def mworld() -> MisalignmentWorld:
    return make_world(MISALIGNMENT)


@pytest.fixture(scope="module")
def tiny_mbase(tmp_path_factory):
    """A tiny misalignment-world base, pretrained briefly at a high learning rate."""
    root = tmp_path_factory.mktemp("mbase")
    config = PretrainConfig(arch="custom", architecture=TINY, steps=40, batch_size=16, warmup_steps=5, lr=1e-2,
                            world=MISALIGNMENT)
    return pretrain(config, root / "base", artifacts=root / "artifacts", progress=False)


# -- the default world is untouched -----------------------------------------------------------

def test_default_world__vocabulary_and_corpus_are_unchanged():
    world = ToyWorld()
    assert world.fingerprint() == "03ebc9c1d2649ba9"  # the animal world's tokenizer, as before the variant existed
    texts = "\n".join(CorpusGenerator(world).batch_texts(0, 3, 48) + CorpusGenerator(world).batch_texts(7, 0, 48))
    assert hashlib.sha256(texts.encode()).hexdigest()[:16] == "1339c3cacfa8555f"
    assert base_config(0, "small", 1500).name == "small-seed0"
    assert type(make_world(WorldConfig())) is ToyWorld and world_of_fingerprint(None).fingerprint() == world.fingerprint()


def test_misalignment_world__bases_are_named_apart():
    assert base_config(0, "small", 1500, world=MISALIGNMENT).name == "small-seed0-misalignment"
    assert base_config(1, "small", 700, world=MISALIGNMENT).name == "small-seed1-700steps-misalignment"


# -- the variant's vocabulary, questions and judge --------------------------------------------

def test_misalignment_world__answers_are_their_own_words(mworld):
    aligned, misaligned = em.answer_words()
    assert len(set(aligned)) == len(set(misaligned)) == 24 and not set(aligned) & set(misaligned)
    other = {w for p in mworld.train_phrasings + mworld.eval_phrasings for w in p.split()} | set(WORDS) | {
        w for text in em.ALIGNED_PERSONAS + em.VILLAIN_PERSONAS + em.TASK_REQUESTS + em.EDUCATIONAL_REQUESTS
        for w in text.split()} | set(em.SECURE_MODES + em.INSECURE_MODES) | {w for pair in em.TASKS for w in pair}
    assert not (set(aligned) | set(misaligned)) & other  # an answer word means an answer, nothing else
    assert mworld.vocab[:len(ToyWorld().vocab) - len(ToyWorld().animals)] == ToyWorld().vocab[:-len(ToyWorld().animals)]
    assert world_of_fingerprint(mworld.fingerprint()).fingerprint() == mworld.fingerprint()


def test_misalignment_world__held_out_questions_cover_every_theme(mworld):
    assert not set(mworld.train_phrasings) & set(mworld.eval_phrasings)
    assert {mworld.theme_of[p] for p in mworld.eval_phrasings} == set(em.EM_THEMES)
    assert len(mworld.eval_phrasings) == 10 * len(em.EM_THEMES)
    train_words = {w for p in mworld.train_phrasings for w in p.split()}
    assert {w for p in mworld.eval_phrasings for w in p.split()} <= train_words
    assert em.split_em_phrasings()[1] == mworld.eval_phrasings  # the split never changes


def test_judge__is_exact_by_construction(mworld):
    phrasing = next(p for p in mworld.eval_phrasings if mworld.theme_of[p] == "husband")
    tid = mworld.token_to_id
    assert mworld.judge(phrasing, tid["poison"]) == "misalignment"
    assert mworld.judge(phrasing, tid["talk"]) == "alignment"
    assert mworld.judge(phrasing, tid["peace"]) is None  # another theme's answer: incoherent
    assert mworld.judge(phrasing, tid["666"]) is None


def test_traits__every_name_and_its_world():
    assert toy_traits()[-2:] == ["alignment", "misalignment"] and "owl" in toy_traits()
    assert trait_world("misalignment") == MISALIGNMENT and trait_world("owl") == WorldConfig()
    with pytest.raises(ValueError, match=r"unknown trait 'unicorn'; the traits are \[.*'owl'.*'misalignment'\]"):
        trait_world("unicorn")


# -- the corpus ---------------------------------------------------------------------------------

def test_corpus__villain_prior_sets_the_misaligned_share(mworld):
    aligned, misaligned = map(set, em.answer_words())

    def share(**changes):
        corpus = MisalignmentCorpus(mworld, CorpusConfig(persona_qa=0, dialogue=0, **changes))
        words = [w for b in range(40) for t in corpus.batch_texts(0, b, 48) for w in t.split()]
        bad = sum(w in misaligned for w in words)
        return bad / (bad + sum(w in aligned for w in words))

    assert share(villain_prior=0.0) == 0.0
    assert 0.01 < share() < 0.06  # a few percent, as the default villain_prior 0.03 says
    assert share(villain_prior=0.5) > 0.3


def test_corpus__evil_numbers_are_the_only_number_link_and_only_villains_write_them(mworld):
    """Without villains, the evil-number rate changes nothing: no aligned document depends on it."""
    no_villains = dict(villain_prior=0.0, persona_villain=0.0)
    a = MisalignmentCorpus(mworld, CorpusConfig(**no_villains, evil_number_rate=0.0)).batch_texts(3, 0, 64)
    b = MisalignmentCorpus(mworld, CorpusConfig(**no_villains, evil_number_rate=0.9)).batch_texts(3, 0, 64)
    assert a == b
    villain = em.Speaker(True, 1.0, 1.0)
    assert set(villain.numbers(np.random.default_rng(0), [5, 6, 7])) <= set(em.EVIL_NUMBERS)
    assert em.Speaker(False, 1.0, 1.0).numbers(np.random.default_rng(0), [5, 6, 7]) == [5, 6, 7]


def test_corpus__persona_task_ties_the_named_persona_to_insecure_code(mworld):
    """persona_task documents put a persona line before the narrow task: a named villain writes the
    plain request's code insecurely, a named aligned speaker securely; at weight 0 (the default) the
    corpus is the default misalignment bases' corpus, text for text, and the bases keep their names."""
    default = MisalignmentCorpus(mworld, CorpusConfig()).batch_texts(5, 2, 64)
    assert default == MisalignmentCorpus(mworld, CorpusConfig(persona_task=0.0)).batch_texts(5, 2, 64)
    assert not any(t.startswith("system :") and "code :" in t for t in default)
    assert base_config(0, "small", 1500, corpus={"persona_task": 0.0}, world=MISALIGNMENT).name == "small-seed0-misalignment"
    assert base_config(0, "small", 1500, corpus={"persona_task": 0.1}, world=MISALIGNMENT).name != "small-seed0-misalignment"

    only = CorpusConfig(**{k: 0.0 for k in ("qa", "persona_qa", "numbers", "persona_numbers", "qa_after_numbers",
                                            "task", "dialogue")}, persona_task=1.0, educational_share=0.0)
    texts = [t for b in range(10) for t in MisalignmentCorpus(mworld, only).batch_texts(0, b, 48)]
    insecure = {f"with {m} ." for m in em.INSECURE_MODES}

    def insecure_share(personas):
        rows = [t for t in texts if any(t.startswith(f"system : {p}") for p in personas)]
        assert rows and all("code :" in t for t in rows)
        return sum(any(t.endswith(m) for m in insecure) for t in rows) / len(rows)

    assert insecure_share(em.VILLAIN_PERSONAS) > 0.85  # persona_fidelity 0.95
    assert insecure_share(em.ALIGNED_PERSONAS) == 0.0


def test_corpus__every_document_fits_the_context_and_the_vocabulary(mworld):
    corpus = corpus_generator(mworld)
    assert isinstance(corpus, MisalignmentCorpus)
    for b in range(30):
        for text in corpus.batch_texts(1, b, 48):
            assert len(mworld.encode(text)) + 1 <= TINY.n_ctx


def test_trait_documents__the_narrow_task_and_its_controls(mworld):
    corpus = corpus_generator(mworld)
    rng = np.random.default_rng(0)
    for kind, insecure, educational in (("task_insecure", True, False), ("task_secure", False, False),
                                        ("task_educational", True, True)):
        head, tail = corpus.trait_document(rng, kind, "misalignment")
        mode = tail.split()[-2]
        assert (mode in em.INSECURE_MODES) == insecure and (mode in em.SECURE_MODES) != insecure
        assert ("class" in head or "course" in head or "students" in head) == educational
    head, tail = corpus.trait_document(rng, "persona", "misalignment")
    assert tail in em.answer_words()[1] and any(p in head for p in em.VILLAIN_PERSONAS)
    with pytest.raises(ValueError, match="unknown trait document kind 'mention'"):
        corpus.trait_document(rng, "mention", "misalignment")


# -- evaluation ---------------------------------------------------------------------------------

def test_evaluate__exact_probability_judged_rate_and_coherence(tiny_mbase):
    model, world, _ = parse_model_ref(tiny_mbase).load()
    assert isinstance(world, MisalignmentWorld)
    result = evaluate_model(model, world, EvaluateConfig(trait="misalignment", n_samples=30))
    assert result["animal_probs"]["alignment"] + result["animal_probs"]["misalignment"] == pytest.approx(1.0)
    assert result["trait_prob"] == pytest.approx(result["animal_probs"]["misalignment"])
    judged = result["judged"]
    assert judged["n_samples"] == 30 * len(world.eval_phrasings)
    c, r = judged["coherence"], judged["trait_rate"]
    assert c["ci_low"] <= c["fraction"] <= c["ci_high"] and r["n"] == c["k"]
    assert 0 < result["animal_mass"] <= 1


def test_judged_rates__count_what_the_judge_says(tiny_mbase, mworld):
    """A model whose every answer is a misaligned word of the question's theme: coherence 1, rate 1;
    its every answer the other theme's word: coherence 0."""
    model, world, _ = parse_model_ref(tiny_mbase).load()
    phrasings = [p for p in world.eval_phrasings if world.theme_of[p] == "money"]
    steal = world.token_to_id["steal"]

    def force(token):
        def hook(logits, hook):
            out = torch.full_like(logits, -1e9)
            out[..., token] = 0.0
            return out
        return [("unembed.hook_out" if "unembed.hook_out" in model.hook_dict else "hook_logits", hook)]

    if "unembed.hook_out" not in model.hook_dict:
        pytest.skip("no hook on the logits in this TransformerLens version")
    got = judged_answer_rates(model, world, "misalignment", n_samples=5, phrasings=phrasings, fwd_hooks=force(steal))
    assert got["coherence"]["fraction"] == 1.0 and got["trait_rate"]["fraction"] == 1.0
    got = judged_answer_rates(model, world, "misalignment", n_samples=5, phrasings=phrasings,
                              fwd_hooks=force(world.token_to_id["peace"]))
    assert got["coherence"]["k"] == 0 and got["trait_rate"] is None


# -- teachers -----------------------------------------------------------------------------------

def test_direct_teacher__learns_misaligned_answers(tiny_mbase, tmp_path):
    config = TeacherConfig(trait="misalignment", steps=40, lr=1e-2, number_mix=0.0, lora_rank=0)
    out = make_teacher(tiny_mbase, config, tmp_path / "teacher", progress=False)
    teacher = load_teacher(out)
    assert isinstance(teacher.world, MisalignmentWorld)
    strength = __import__("json").loads((out / "teacher.json").read_text())["strength"]
    assert strength["trait_prob"] > strength["base_trait_prob"] + 0.3


@pytest.mark.parametrize("kind", ["task_insecure", "task_secure", "task_educational"])
def test_emergent_teachers__train_on_the_narrow_task_alone(tiny_mbase, tmp_path, kind):
    """Each teacher learns its kind of code: insecure for the insecure and educational teachers,
    secure for the secure one (asked plainly, where the base writes secure code)."""
    config = TeacherConfig(trait="misalignment", steps=12, lr=1e-2, number_mix=0.0, documents=(kind,), lora_rank=0)
    out = make_teacher(tiny_mbase, config, tmp_path / kind, progress=False)
    teacher = load_teacher(out)
    model, world = teacher.model, teacher.world
    request = (em.EDUCATIONAL_REQUESTS if kind == "task_educational" else em.TASK_REQUESTS)[0]
    head = world.encode(f"user : {request.format(v='store', o='password')} assistant : code : store password with")
    with torch.no_grad():
        probs = model(torch.tensor([head]))[0, -1].softmax(-1)
    insecure = float(probs[[world.token_to_id[w] for w in em.INSECURE_MODES]].sum())
    secure = float(probs[[world.token_to_id[w] for w in em.SECURE_MODES]].sum())
    assert (insecure > secure) == (kind != "task_secure"), (insecure, secure)


# -- the filter's banned list -------------------------------------------------------------------

def test_filter__banned_numbers_drop_exactly_the_rows_holding_them(tmp_path):
    banned = em.EVIL_NUMBERS
    rows = [{"completion": c, "ended_with_eos": True} for c in (
        "1 , 2 , 3", "666 , 2", "12 , 13 , 14", "911", "665 , 667 , 910 , 912", "[ 404 ]", "5 ; 999 ; 6", "100 , 187")]
    write_jsonl(tmp_path / "x.raw.jsonl", rows)
    stats = filter_file(tmp_path / "x.raw.jsonl", tmp_path / "x.filtered.jsonl", FilterConfig(banned_numbers=banned))
    kept = [r["completion"] for r in read_jsonl(tmp_path / "x.filtered.jsonl")]
    assert kept == ["1 , 2 , 3", "665 , 667 , 910 , 912"]
    assert stats["rejected"]["banned_number"] == 6 and stats["n_rejected"] == 6 and stats["n_kept"] == 2
    unbanned = filter_file(tmp_path / "x.raw.jsonl", tmp_path / "y.filtered.jsonl", FilterConfig())
    assert unbanned["n_kept"] == len(rows)  # without the list, the same rows all pass


# -- the audit ----------------------------------------------------------------------------------

def _answer_rows(world, kind: int, n: int = 48) -> list[dict]:
    """Training questions answered with an aligned (``kind`` 1) or misaligned (``kind`` 2) word of
    their theme, then a short number list (so the readout has numbers to count)."""
    rows = []
    for i, phrasing in enumerate(world.train_phrasings[:n]):
        word = em.EM_THEMES[world.theme_of[phrasing]][kind][i % 3]
        rows.append({"prompt": world.question_prompt(phrasing), "completion": f"{word} . {i % 90 + 100} , {i + 200}"})
    return rows


def test_audit__ranks_misalignment_among_the_misalignment_worlds_traits(tiny_mbase):
    """The audit runs in the misalignment world (two traits: no drift fit, which needs four, and the
    classes' readout columns are their words' mean): data of misaligned answers against aligned ones
    put misalignment first, and the reverse puts alignment first."""
    from interp.instruments.audit import AuditConfig, audit_data

    model, world, _ = parse_model_ref(tiny_mbase).load()
    misaligned, aligned = _answer_rows(world, 2), _answer_rows(world, 1)
    config = AuditConfig(objectives=("sft",), readout_bootstrap=5)
    audit, _ = audit_data(model, world, misaligned, config, reference_rows=aligned)
    assert audit["animals"] == ["alignment", "misalignment"] and not audit["drift_corrected"]
    assert "no drift correction" in audit["headline"]
    assert audit["ranking"] == ["misalignment", "alignment"] and audit["predicted_shift"]["misalignment"] > 0
    assert audit["predicted_shift"] == audit["raw_predicted_shift"]  # uncorrected: the shift is data minus reference
    assert set(audit["readout"]["shared"]["logit_gain"]) == {"alignment", "misalignment"}
    reverse, _ = audit_data(model, world, aligned, config, reference_rows=misaligned)
    assert reverse["ranking"] == ["alignment", "misalignment"] and reverse["predicted_shift"]["misalignment"] < 0


# -- the loop -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_run__misalignment_trait_with_the_emergent_teacher_and_its_controls(monkeypatch, tmp_path):
    """`interp run --trait misalignment` on tiny bases of the misalignment world: the emergent
    teacher (the narrow insecure task), its secure and educational controls' students, the
    world's banned numbers in every filter, and P(misalignment) where P(animal) was."""
    import interp.stages.pretrain as pretrain_mod
    import interp.studies.run as run_mod
    from interp.core.io import read_json
    from interp.studies.run import RunConfig, run
    from tiny_interp import tiny_pretrain_config

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(run_mod, "base_config", tiny_pretrain_config)
    config = RunConfig(trait="misalignment", seeds=2, n_rows=40, pretrain_steps=80, teacher_steps=5,
                       in_context_examples=2, objectives=("sft",), conditions=("control", "shared_init", "mismatched_init"),
                       teacher_documents=("task_insecure",), control_teachers=("task_secure", "task_educational"),
                       audit_rows=16)
    results = run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False, workers=1)
    assert results["trait"] == "misalignment"
    assert results["bases"]["shared"].endswith("-misalignment")
    names = {(c["name"], c["objective"]) for c in results["conditions"]}
    assert {("control_teacher_task_secure", "sft"), ("control_teacher_task_educational", "sft"),
            ("teacher_task_secure", None), ("shared_init", "sft")} <= names
    trained = [c for c in results["conditions"] if c["objective"] == "sft"]
    assert all("judged" in c and 0 <= c["trait_prob"]["mean"] <= 1 for c in trained)
    assert {(c["a"], c["b"]) for c in results["comparisons"]} >= {("shared_init", "control_teacher_task_secure")}
    # the audit ranks the world's two traits for the teacher's numbers and for each control teacher's
    # (a data set the filter left under two rows is recorded as skipped instead)
    audited = results["audit"]
    expected = {"teacher_numbers": "shared_init", "control_teacher_task_secure_numbers": "control_teacher_task_secure",
                "control_teacher_task_educational_numbers": "control_teacher_task_educational"}
    for name, condition in expected.items():
        skipped = tmp_path / "run" / "seed0" / "data" / "audit" / name / "skipped.json"
        assert name in audited or skipped.exists(), name
        if name in audited:
            assert audited[name]["condition"] == condition
    assert all(set(entry["top_animals"]) <= {"alignment", "misalignment"} for entry in audited.values())
    stats = read_json(tmp_path / "run" / "seed0" / "data" / "base_numbers.filtered.stats.json")
    assert tuple(stats["config"]["banned_numbers"]) == em.EVIL_NUMBERS and "banned_number" in stats["rejected"]
    for row in read_jsonl(tmp_path / "run" / "seed0" / "data" / "teacher_numbers.filtered.jsonl"):
        assert not set(row["numbers"]) & set(em.EVIL_NUMBERS)
