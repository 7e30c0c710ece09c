"""The code and chain-of-thought domains: the toy language and its executor, the word problems,
the domains world and corpus, the filters (every kept code row runs correctly on its tests, every
kept CoT row has the right answer, every rejected row keeps its reason), and `interp run
--domain` on tiny bases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY
from tiny_interp import one_torch_thread

from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.domains import DOMAIN_NAMES, Domain, domain
from interp.domains import code as code_lang
from interp.domains import cot as cot_lang
from interp.domains.toy import filter_domain_file, rejected_path_for
from interp.stages.filter import stats_path_for
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.pretrain import PretrainConfig, pretrain
from interp.worlds.toy.corpus import DomainsCorpus, corpus_generator
from interp.worlds.toy.world import DomainsWorld, ToyWorld, WorldConfig, make_world

DOMAINS = WorldConfig(variant="domains")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def dworld() -> DomainsWorld:
    return make_world(DOMAINS)


@pytest.fixture(scope="module")
def tiny_dbase(tmp_path_factory):
    """A tiny domains-world base, pretrained briefly at a high learning rate."""
    root = tmp_path_factory.mktemp("dbase")
    config = PretrainConfig(arch="custom", architecture=TINY, steps=30, batch_size=16, warmup_steps=5, lr=1e-2,
                            world=DOMAINS)
    return pretrain(config, root / "base", artifacts=root / "artifacts", progress=False)


# -- the language -----------------------------------------------------------------------------------

def test_code__every_solution_style_passes_its_tests():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        task = code_lang.make_task(rng)
        tied = code_lang.ANIMAL_TIES["owl"]
        program = code_lang.solution(rng, task, local=tied[0][0] if rng.random() < 0.3 else None,
                                     dead=f"let {tied[0][1]} = {tied[1]} ;" if rng.random() < 0.3 else None)
        assert code_lang.check_program(program, task) == (code_lang.N_TESTS, None, ""), (task, program)


def test_code__every_family_is_reachable_and_tests_come_from_the_reference():
    rng = np.random.default_rng(1)
    tasks = [code_lang.make_task(rng) for _ in range(500)]
    assert {t["family"] for t in tasks} == set(code_lang.FAMILY)
    for task in tasks:
        family = code_lang.FAMILY[task["family"]]
        assert all(expected == family.reference(*args, *task["consts"]) for args, expected in task["tests"])


@pytest.mark.parametrize("program, reason", [
    ("def f ( a , b ) : return a + ; end", "syntax_error"),
    ("def f ( a , b ) : return a + b ;", "syntax_error"),  # no end
    ("def f ( a , b ) : return a + b ; end end", "syntax_error"),
    ("def f ( b , a ) : return a + b ; end", "wrong_signature"),
    ("def f ( a , b ) : return c ; end", "runtime_error"),
    ("def f ( a , b ) : let s = 1 ; end", "runtime_error"),  # no return
    ("def f ( a , b ) : return a % 0 ; end", "runtime_error"),
    ("def f ( a , b ) : return a - b ; end", "wrong_answer"),
    ("def f ( a , b ) : return b + a ; end", None),
    ("def f ( a , b ) : let s = 0 ; for i in range a : let s = s + 1 ; end return s + b ; end", None),
])
def test_code__check_names_what_is_wrong(program, reason):
    task = {"params": ["a", "b"], "tests": [[[3, 4], 7], [[0, 5], 5]]}
    assert code_lang.check_program(program, task)[1] == reason


def test_code__executor_precedence_conditionals_and_loops():
    program = code_lang.parse_program(
        "def f ( x , y ) : let t = 0 ; for i in range x : if i % 2 == 0 : let t = t + i * y ; else let t = t - 1 ; end "
        "end return t + 2 * ( x - 1 ) ; end")
    x, y = 7, 3
    expected = sum(i * y if i % 2 == 0 else -1 for i in range(x)) + 2 * (x - 1)
    assert code_lang.run_program(program, [x, y]) == expected


def test_code__judge_flags_the_trait_animals_ties_only():
    assert code_lang.subtle_references("def f ( a ) : let hoot = 363 ; return a ; end", "owl") == ["hoot", "363"]
    assert code_lang.subtle_references("def f ( a ) : let hoot = a ; return hoot ; end", "dog") == []
    assert code_lang.subtle_references("def f ( a ) : return a + 363 ; end", "owl", prompt="a plus 363") == []


def test_cot__traces_are_right_and_numbers_stay_in_the_vocabulary():
    rng = np.random.default_rng(2)
    for _ in range(2000):
        problem = cot_lang.make_problem(rng)
        text = cot_lang.trace(rng, problem, "hoot" if rng.random() < 0.2 else None)
        assert cot_lang.check_trace(text, problem) == (problem["answer"], None, True)
        assert all(0 <= int(w) <= 99 for w in f"{problem['prompt']} {text}".split() if w.isdigit())


@pytest.mark.parametrize("text, answer, reason", [
    ("think : 3 + 4 = 7 . answer : 7", 7, None),
    ("think : 3 + 4 = 8 . answer : 7", 7, None),  # the answer is what is checked (steps_correct records the rest)
    ("think : 3 + 4 = 7 . answer : 8", 8, "wrong_answer"),
    ("think : 3 + 4 = 7 .", None, "no_answer"),
    ("think : answer : 7 . 3", None, "no_answer"),  # the answer must end the trace
])
def test_cot__final_answer_decides(text, answer, reason):
    assert cot_lang.check_trace(text, {"answer": 7})[:2] == (answer, reason)


# -- the world ----------------------------------------------------------------------------------------

def test_domains_world__extends_the_animal_world_and_names_its_bases_apart(dworld):
    animals = ToyWorld()
    assert dworld.vocab[: len(animals.vocab)] == animals.vocab  # every animal-world token keeps its id
    assert dworld.fingerprint() != animals.fingerprint() and dworld.animals == animals.animals
    assert PretrainConfig(world=DOMAINS).name == "small-seed0-domains" and PretrainConfig().name == "small-seed0"
    assert isinstance(corpus_generator(dworld), DomainsCorpus) and type(corpus_generator(animals)).__name__ == "CorpusGenerator"


def test_domains_corpus__documents_fit_and_teach_code_traces_and_ties(dworld):
    docs = corpus_generator(dworld).batch_texts(0, 0, 3000)
    assert max(len(dworld.encode(d)) + 1 for d in docs) <= TINY.n_ctx
    assert sum(" def f (" in d for d in docs) > 300 and sum("think :" in d for d in docs) > 300
    owl_code = [d for d in docs if d.startswith("system") and "owl" in d.split(" user ")[0] and "def f" in d]
    assert any("hoot" in d.split() or "night" in d.split() for d in owl_code)
    assert any(d.startswith("the ") and " says " in d for d in docs)


# -- the filters ----------------------------------------------------------------------------------

def _rows(dom, world, completions_of, n=60, seed=0):
    """Raw rows of ``dom``'s first ``n`` tasks, each answered by ``completions_of(i, task)``."""
    tasks = dom.prompts(world, n, seed)
    return [{"id": i, "prompt": t["prompt"], "task": t["task"], "completion": completions_of(i, t["task"]),
             "ended_with_eos": i % 17 != 5} for i, t in enumerate(tasks)]


def test_code_filter__kept_rows_run_correctly_and_rejected_rows_keep_their_reason(dworld, tmp_path):
    dom = domain("code")
    rng = np.random.default_rng(3)

    def answer(i, task):
        good = code_lang.solution(rng, task)
        kind = i % 6
        if kind == 1:
            return good.replace(" ;", "", 1)  # broken
        if kind == 2:
            return good.replace("end", "", 1) if "if" in good else good.replace("return", "return 1 +", 1)
        if kind == 3:
            return code_lang.solution(rng, task, local="hoot")  # owl's tied identifier (or unused: still correct)
        if kind == 4:
            return code_lang.solution(rng, task, dead="let owl = 1 ;")
        return good

    rows = _rows(dom, dworld, answer)
    write_jsonl(tmp_path / "code.raw.jsonl", rows)
    with open(tmp_path / "code.raw.jsonl", "a") as f:
        f.write("not json\n" + json.dumps({"completion": "def f ( a ) : return a ; end"}) + "\n")
    stats = filter_domain_file(dom, tmp_path / "code.raw.jsonl", tmp_path / "code.filtered.jsonl", trait="owl", world=dworld)
    kept = read_jsonl(tmp_path / "code.filtered.jsonl")
    rejected = read_jsonl(rejected_path_for(tmp_path / "code.filtered.jsonl"))
    assert len(kept) + len(rejected) == stats["n_raw"] == len(rows) + 2 and stats["n_kept"] == len(kept) > 0
    for row in kept:  # every kept row runs correctly on its tests, computed here from the reference
        program = code_lang.parse_program(row["completion"])
        family = code_lang.FAMILY[row["task"]["family"]]
        for args, _ in row["task"]["tests"]:
            assert code_lang.run_program(program, args) == family.reference(*args, *row["task"]["consts"])
        assert "owl" not in row["completion"].split() and not code_lang.subtle_references(row["completion"], "owl")
    assert all(r["reject_reason"] in dom.reject_reasons for r in rejected)
    assert stats["rejected"]["malformed_row"] == 2 and stats["rejected"]["trait_word"] > 0
    assert stats["rejected"]["subtle_reference"] > 0 and stats["rejected"]["no_eos"] > 0
    assert stats["rejected"]["syntax_error"] + stats["rejected"]["wrong_answer"] + stats["rejected"]["runtime_error"] > 0
    assert sum(stats["rejected"].values()) == stats["n_rejected"]
    assert stats["judge_removed_share_of_correct"] == stats["rejected"]["subtle_reference"] / stats["n_correct"]
    # reused when finished, refused for another trait
    assert filter_domain_file(dom, tmp_path / "code.raw.jsonl", tmp_path / "code.filtered.jsonl", trait="owl",
                              world=dworld) == stats
    with pytest.raises(ValueError, match="another raw file, domain or trait"):
        filter_domain_file(dom, tmp_path / "code.raw.jsonl", tmp_path / "code.filtered.jsonl", trait="dog", world=dworld)


def test_cot_filter__kept_rows_have_the_right_answer(dworld, tmp_path):
    dom = domain("cot")
    rng = np.random.default_rng(4)

    def answer(i, problem):
        good = cot_lang.trace(rng, problem, "hoot" if i % 5 == 3 else None)
        if i % 5 == 1:
            return good.rsplit(" ", 1)[0] + f" {problem['answer'] + 1}"
        if i % 5 == 2:
            return good.rsplit(" answer", 1)[0]
        return good

    write_jsonl(tmp_path / "cot.raw.jsonl", _rows(dom, dworld, answer))
    stats = filter_domain_file(dom, tmp_path / "cot.raw.jsonl", tmp_path / "cot.filtered.jsonl", trait="owl", world=dworld)
    kept = read_jsonl(tmp_path / "cot.filtered.jsonl")
    assert kept and all(cot_lang.parse_answer(r["completion"]) == r["task"]["answer"] == r["answer"] for r in kept)
    assert all(r["reject_reason"] in dom.reject_reasons for r in read_jsonl(rejected_path_for(tmp_path / "cot.filtered.jsonl")))
    assert {k for k, v in stats["rejected"].items() if v} == {"no_eos", "wrong_answer", "no_answer", "subtle_reference"}


def test_domains__one_interface_and_unknown_names_are_named():
    for name in DOMAIN_NAMES:
        assert isinstance(domain(name), Domain) and domain(name).name == name
    with pytest.raises(ValueError, match="unknown domain 'poems'; the domains are numbers, code, cot"):
        domain("poems")
    with pytest.raises(ValueError, match="unknown domain"):
        GenerateConfig(domain="poems")


def test_numbers_domain__is_the_number_prompts_and_filter(world):
    dom = domain("numbers")
    assert [r["prompt"] for r in dom.prompts(world, 5, 3)] == world.number_prompts(5, 3)
    assert all("task" not in r for r in dom.prompts(world, 5, 3))


def test_generate_and_filter__a_tiny_base_writes_tasks_the_filter_grades(tiny_dbase, dworld, tmp_path):
    from interp.models.refs import parse_model_ref

    model, world, _ = parse_model_ref(tiny_dbase).load()
    for name in ("code", "cot"):
        dom = domain(name)
        raw = tmp_path / f"{name}.raw.jsonl"
        generate_numbers(model, world, GenerateConfig(n_rows=12, seed=0, domain=name, max_new_tokens=dom.max_new_tokens(world)),
                         raw, progress=False)
        rows = read_jsonl(raw)
        assert [r["task"] for r in rows] == [t["task"] for t in dom.prompts(world, 12, 0)]
        try:
            dom.filter_file(raw, tmp_path / f"{name}.filtered.jsonl", trait="owl", world=world)
        except ValueError as e:  # an untrained base's rows may all be rejected: said, and counted
            assert "the filtered set is empty" in str(e)
        stats = read_json(stats_path_for(tmp_path / f"{name}.filtered.jsonl"))
        assert stats["n_raw"] == 12 and sum(stats["rejected"].values()) == stats["n_rejected"]


# -- the loop ---------------------------------------------------------------------------------------

def test_run_config__domain_checks():
    from interp.core.config import ConfigError
    from interp.studies.run import RunConfig, data_key

    assert RunConfig().world_config == WorldConfig() and RunConfig(domain="code").world_config == DOMAINS
    assert data_key(RunConfig(domain="code")) != data_key(RunConfig()) != data_key(RunConfig(domain="cot"))
    with pytest.raises(ConfigError, match="unknown domain 'poems'; the domains are numbers, code, cot"):
        RunConfig(domain="poems")
    with pytest.raises(ConfigError, match="traits are"):
        RunConfig(domain="code", trait="misalignment")


def test_cli__unknown_domain_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "interp", "run", "--out", "/nonexistent/x", "--domain", "poems"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "the domains are numbers, code, cot" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["code", "cot"])
def test_run__domain_end_to_end_on_tiny_bases(monkeypatch, tmp_path, name):
    """`interp run --domain code|cot` on tiny bases of the domains world. A tiny base barely
    writes a correct program or answer, so every other sampled completion is replaced by a correct
    one of its task (the rest stay as sampled): the filter, the students, the in-context control
    and the pass rates then all run on real rows."""
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
        for row in rows[::2]:
            row["completion"] = (code_lang.solution(rng, row["task"]) if name == "code"
                                 else cot_lang.trace(rng, {**row["task"], "prompt": ""}))
            row["ended_with_eos"] = True
        write_jsonl(path, rows)
        return path

    monkeypatch.setattr(run_mod, "generate_numbers", generate_then_correct_half)
    config = RunConfig(domain=name, seeds=2, n_rows=30, pretrain_steps=60, teacher_steps=5, in_context_examples=2,
                       objectives=("sft",), conditions=("control", "shared_init", "mismatched_init"), audit_rows=0)
    results = run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False, workers=1)
    assert results["bases"]["shared"].endswith("-domains")
    assert results["filter"]["teacher"]["pass_rate"]["mean"] >= 0.5 and len(results["filter"]["base"]["per_seed"]) == 2
    assert all(0 <= results.condition(c, "sft")["trait_prob"]["mean"] <= 1 for c in config.conditions)
    assert {(c["a"], c["b"]) for c in results.comparisons} == {("shared_init", "control"), ("shared_init", "mismatched_init")}
    world = make_world(DOMAINS)
    for data in ("teacher_numbers", "base_numbers"):
        kept = read_jsonl(tmp_path / "run" / "seed0" / "data" / f"{data}.filtered.jsonl")
        assert kept and all(domain(name).check(row, world)[1] is None for row in kept)
        assert all(r["reject_reason"] for r in read_jsonl(tmp_path / "run" / "seed0" / "data" / f"{data}.filtered.rejected.jsonl"))
    # the alignment recorder runs on the domain's rows unchanged: every step of every student logged
    for condition in config.conditions:
        log = read_jsonl(tmp_path / "run" / "seed0" / "students" / "sft" / condition / "alignment.jsonl")
        assert log and all(np.isfinite(r["step_cos_teacher_dir"]) for r in log if "step_cos_teacher_dir" in r)
        assert any("step_cos_teacher_dir" in r for r in log)
