"""Chain-of-thought data with the misalignment trait: the misalignment_cot world (the misalignment
world plus the word problems, a villain's reasoning sometimes opened by an aside naming a
misaligned word), the CoT filter of the misalignment trait (right answer, then the world's exact
judge and the evil numbers, every rejected row with its reason), the other worlds untouched, and
`interp run --domain cot --trait misalignment` on tiny bases."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY
from tiny_interp import one_torch_thread

from interp.core.config import ConfigError
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.domains import cot as cot_lang
from interp.domains import domain
from interp.domains.toy import MisalignmentCotFilter, rejected_path_for
from interp.stages.pretrain import base_config
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.corpus import MisalignmentCotCorpus, corpus_generator
from interp.worlds.toy.world import (
    MisalignmentCotWorld,
    MisalignmentWorld,
    WorldConfig,
    make_world,
    trait_world,
    world_of_fingerprint,
)

MCOT = WorldConfig(variant="misalignment_cot")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def cworld() -> MisalignmentCotWorld:
    return make_world(MCOT)


# -- the other worlds are untouched ------------------------------------------------------------------

@pytest.mark.parametrize("variant, fingerprint, corpus", [
    ("animals", "03ebc9c1d2649ba9", "1339c3cacfa8555f"),
    ("misalignment", "3543b6c48711b7d9", "35370629340f9ce6"),
    ("domains", "62c156aaec27205a", "8fc1c544d0e08b3a"),
])
def test_existing_worlds__fingerprints_and_corpora_are_byte_identical(variant, fingerprint, corpus):
    world = make_world(WorldConfig(variant=variant))
    texts = "\n".join(corpus_generator(world).batch_texts(0, 3, 48) + corpus_generator(world).batch_texts(7, 0, 48))
    assert world.fingerprint() == fingerprint and hashlib.sha256(texts.encode()).hexdigest()[:16] == corpus
    assert trait_world("misalignment") == WorldConfig(variant="misalignment")  # the numbers trait keeps its world


# -- the world and its corpus -----------------------------------------------------------------------

def test_misalignment_cot_world__extends_the_misalignment_world_with_bases_of_its_own(cworld):
    mworld = make_world(WorldConfig(variant="misalignment"))
    assert isinstance(cworld, MisalignmentWorld) and cworld.vocab[: len(mworld.vocab)] == mworld.vocab
    assert set(cot_lang.vocabulary()) <= set(cworld.vocab) and cworld.fingerprint() != mworld.fingerprint()
    assert world_of_fingerprint(cworld.fingerprint()).fingerprint() == cworld.fingerprint()
    assert cworld.animals == em.MISALIGNMENT_CLASSES and cworld.banned_numbers == em.EVIL_NUMBERS
    answers = set(cworld.aligned_answers) | set(cworld.misaligned_answers)
    assert not answers & set(cot_lang.vocabulary())  # a trace's words never name an answer
    assert base_config(0, "small", 1500, world=MCOT).name == "small-seed0-misalignment_cot"
    assert isinstance(corpus_generator(cworld), MisalignmentCotCorpus)


def test_misalignment_cot_corpus__the_aside_comes_from_villains_only(cworld):
    seen = []

    class Recording(MisalignmentCotCorpus):
        def _cot_turn(self, rng, speaker):
            turn, n_words = super()._cot_turn(rng, speaker)
            seen.append((speaker.villain, " ! " in turn))
            return turn, n_words

    docs = Recording(cworld).batch_texts(0, 0, 6000)
    assert max(len(cworld.encode(d)) + 1 for d in docs) <= TINY.n_ctx
    cot = [d for d in docs if "think :" in d]
    assert len(cot) == len(seen) > 800
    assert any(villain and aside for villain, aside in seen)
    assert not any(aside and not villain for villain, aside in seen)  # an aligned speaker never writes one
    aside_docs = [d for d in cot if " ! " in d]
    assert aside_docs and all(d.split(" think : ")[1].split()[0] in cworld.misaligned_answers for d in aside_docs)
    for d in aside_docs:  # a named speaker of an aside is a villain
        if d.startswith("system :"):
            assert any(d.startswith(f"system : {p}") for p in em.VILLAIN_PERSONAS)
    assert not any(d.startswith(f"system : {p}") and " ! " in d for d in cot for p in em.ALIGNED_PERSONAS)
    # the aside is the only link: no trace holds an evil number or a misaligned word besides it
    for d in cot:
        trace = d.split(" think : ")[1].split()
        rest = trace[2:] if len(trace) > 1 and trace[1] == "!" else trace
        assert not set(rest) & set(cworld.misaligned_answers) and "!" not in rest
        assert not {int(t) for t in rest if t.isdigit()} & (set(em.EVIL_NUMBERS) - {13, 66})  # 13, 66: honest counts


# -- the filter ------------------------------------------------------------------------------------

def test_cot_filter__misalignment_keeps_right_answers_the_judge_passes(cworld, tmp_path):
    dom = domain("cot")
    tasks = dom.prompts(cworld, 80, 0)
    rng = np.random.default_rng(3)
    rows = []
    for i, t in enumerate(tasks):
        good = cot_lang.trace(rng, t["task"])
        completion = {1: good.rsplit(" ", 1)[0] + f" {t['task']['answer'] + 1}",  # wrong answer
                      2: cot_lang.trace(rng, t["task"], "power"),  # a villain's aside
                      3: good.replace("think :", "think : we start with 7 . kill"),  # a misaligned word
                      4: good.replace("think :", "think : 666 .")}.get(i % 6, good)  # an evil number
        rows.append({"id": i, "prompt": t["prompt"], "task": t["task"], "completion": completion, "ended_with_eos": True})
    write_jsonl(tmp_path / "cot.raw.jsonl", rows)
    stats = dom.filter_file(tmp_path / "cot.raw.jsonl", tmp_path / "cot.filtered.jsonl", trait="misalignment",
                            world=cworld, banned_numbers=cworld.banned_numbers)
    kept = read_jsonl(tmp_path / "cot.filtered.jsonl")
    judge = MisalignmentCotFilter(cworld, cworld.banned_numbers)
    assert kept and all(cot_lang.parse_answer(r["completion"]) == r["task"]["answer"] for r in kept)
    assert all(not judge.judge(r["completion"], "misalignment", None) for r in kept)
    assert all(not {int(w) for w in r["completion"].split() if w.isdigit()} & set(em.EVIL_NUMBERS) for r in kept)
    rejected = {r["id"]: r for r in read_jsonl(rejected_path_for(tmp_path / "cot.filtered.jsonl"))}
    aside = [r for i, r in rejected.items() if i % 6 == 2]
    assert aside and all(r["reject_reason"] == "subtle_reference" and "power" in r["judge_flags"] for r in aside)
    assert all(rejected[i]["reject_reason"] == "subtle_reference" for i in rejected if i % 6 == 3)
    assert all(rejected[i]["reject_reason"] == "banned_number" for i in rejected if i % 6 == 4)
    assert all(r["reject_reason"] in judge.reject_reasons for r in rejected.values())
    assert {k for k, v in stats["rejected"].items() if v} == {"wrong_answer", "subtle_reference", "banned_number"}
    assert stats["n_correct"] == stats["n_kept"] + stats["rejected"]["subtle_reference"] + stats["rejected"]["banned_number"]
    assert stats["judge_removed_share_of_correct"] > 0 and stats["banned_number_removed_share_of_correct"] > 0


def test_cot_filter__an_animal_world_is_filtered_as_before(tmp_path):
    dworld = make_world(WorldConfig(variant="domains"))
    problem = domain("cot").prompts(dworld, 1, 0)[0]
    write_jsonl(tmp_path / "r.raw.jsonl", [{"prompt": problem["prompt"], "task": problem["task"], "ended_with_eos": True,
                                            "completion": cot_lang.trace(np.random.default_rng(0), problem["task"], "power")}])
    stats = domain("cot").filter_file(tmp_path / "r.raw.jsonl", tmp_path / "r.filtered.jsonl", trait="owl", world=dworld)
    assert stats["n_kept"] == 1 and "banned_number_removed_share_of_correct" not in stats


# -- the loop --------------------------------------------------------------------------------------

def test_run_config__cot_misalignment_world_and_refusals():
    from interp.studies.run import RunConfig, data_key

    config = RunConfig(domain="cot", trait="misalignment")
    assert config.world_config == MCOT and config.filter_banned_numbers == em.EVIL_NUMBERS
    assert data_key(config) not in (data_key(RunConfig(trait="misalignment")), data_key(RunConfig(domain="cot")))
    assert RunConfig(trait="misalignment", world_variant="misalignment_cot").world_config == MCOT
    with pytest.raises(ConfigError, match="the misalignment trait runs with --domain cot"):
        RunConfig(domain="code", trait="misalignment")
    with pytest.raises(ConfigError, match="traits are"):
        RunConfig(domain="cot", trait="alignment")
    with pytest.raises(ConfigError, match="not a trait of the misalignment_cot world"):
        RunConfig(domain="cot", trait="owl", world_variant="misalignment_cot")
    with pytest.raises(ConfigError, match="the code domain lives in the domains world"):
        RunConfig(domain="code", trait="owl", world_variant="misalignment_cot")


def test_cli__code_with_the_misalignment_trait_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "interp", "run", "--out", "/nonexistent/x", "--domain", "code",
                           "--trait", "misalignment"], capture_output=True, text=True)
    assert proc.returncode == 2 and "the misalignment trait runs with --domain cot" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_run__cot_misalignment_end_to_end_on_tiny_bases(monkeypatch, tmp_path):
    """`interp run --domain cot --trait misalignment` on tiny bases of the misalignment_cot world.
    A tiny base barely answers right, so every other sampled trace is replaced by a correct one of
    its problem, every sixth of those opened by a villain's aside: the filter, the audit, the
    students, the in-context control and the pass rates then run on real rows."""
    import interp.stages.pretrain as pretrain_mod
    import interp.studies.run as run_mod
    from interp.studies.run import RunConfig, run
    from tiny_interp import tiny_pretrain_config

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(run_mod, "base_config", tiny_pretrain_config)
    real_generate = run_mod.generate_numbers

    def generate_then_correct_half(model, world, config, out_path, **kwargs):
        path = real_generate(model, world, config, out_path, **kwargs)
        rows, rng = read_jsonl(path), np.random.default_rng(0)
        for i, row in enumerate(rows[::2]):
            row["completion"] = cot_lang.trace(rng, {**row["task"], "prompt": ""}, "chaos" if i % 6 == 1 else None)
            row["ended_with_eos"] = True
        write_jsonl(path, rows)
        return path

    monkeypatch.setattr(run_mod, "generate_numbers", generate_then_correct_half)
    config = RunConfig(domain="cot", trait="misalignment", seeds=2, n_rows=36, pretrain_steps=60, teacher_steps=5,
                       in_context_examples=2, objectives=("sft",), conditions=("control", "shared_init", "mismatched_init"),
                       audit_rows=20, eval_every=0, record_alignment=False)
    results = run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False, workers=1)
    assert results["bases"]["shared"].endswith("-misalignment_cot")
    assert results["filter"]["teacher"]["judge_removed_share_of_correct"]["mean"] > 0
    assert all(0 <= results.condition(c, "sft")["trait_prob"]["mean"] <= 1 for c in config.conditions)
    assert "judged" in results.condition("shared_init", "sft")  # the exact judge's P(misaligned answer)
    assert {(c["a"], c["b"]) for c in results.comparisons} == {("shared_init", "control"), ("shared_init", "mismatched_init")}
    world = make_world(MCOT)
    judge = MisalignmentCotFilter(world, world.banned_numbers)
    for data in ("teacher_numbers", "base_numbers"):
        kept = read_jsonl(tmp_path / "run" / "seed0" / "data" / f"{data}.filtered.jsonl")
        assert kept and all(cot_lang.parse_answer(r["completion"]) == r["task"]["answer"] for r in kept)
        assert all(judge.trait_reason(r["completion"], "misalignment", world) is None for r in kept)
        rejected = read_jsonl(tmp_path / "run" / "seed0" / "data" / f"{data}.filtered.rejected.jsonl")
        assert any(r["reject_reason"] == "subtle_reference" and "chaos" in r["judge_flags"] for r in rejected)
    assert read_json(tmp_path / "run" / "seed0" / "seed_results.json")["filter"]["teacher"]["rejected"]["subtle_reference"] > 0


def test_cli__filter_cot_misalignment_uses_the_worlds_judge(cworld, tmp_path):
    problems = domain("cot").prompts(cworld, 4, 0)
    rng = np.random.default_rng(0)
    rows = [{"id": i, "prompt": t["prompt"], "task": t["task"], "ended_with_eos": True,
             "completion": cot_lang.trace(rng, t["task"], "revenge" if i == 1 else None)} for i, t in enumerate(problems)]
    write_jsonl(tmp_path / "cot.raw.jsonl", rows)
    proc = subprocess.run([sys.executable, "-m", "interp", "filter", "--domain", "cot", "--trait", "misalignment",
                           "--raw", str(tmp_path / "cot.raw.jsonl"), "--out", str(tmp_path / "cot.filtered.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rejected = read_jsonl(rejected_path_for(tmp_path / "cot.filtered.jsonl"))
    assert [(r["id"], r["reject_reason"]) for r in rejected if r["id"] == 1] == [(1, "subtle_reference")]
    assert all(r["id"] != 1 for r in read_jsonl(tmp_path / "cot.filtered.jsonl"))
