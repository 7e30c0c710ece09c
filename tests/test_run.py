"""End-to-end: the whole loop on tiny bases, and the CLI's main job on the quick setting."""

import json

import pytest

import interp.stages.pretrain as pretrain_mod
from interp.report.outputs import finish_run
from interp.cli import main
from interp.core.config import ConfigError
from interp.studies.run import OBJECTIVES, TRAINED_CONDITIONS, RunConfig, run
from interp.core.io import json_sha256, read_jsonl

from conftest import TINY
from tiny_interp import tiny_pretrain_config

TINY_OTHER = TINY.replace(d_model=48, n_heads=2, d_mlp=96)


@pytest.fixture
def tiny_presets(monkeypatch):
    """Tiny architectures, pretrained just enough (200 steps at a high learning rate) to write
    number lists that pass the filter."""
    import interp.studies.run as run_mod

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(run_mod, "base_config", tiny_pretrain_config)
    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "narrow", TINY_OTHER)


def _tiny_run_config(**kw):
    return RunConfig(**{"seeds": 2, "n_rows": 48, "pretrain_steps": 200, "teacher_steps": 5, "in_context_examples": 2, **kw})


@pytest.mark.slow
def test_run__writes_every_condition_with_intervals(tiny_presets, tmp_path):
    results = run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    finish_run(tmp_path / "run")  # what `interp run` does next: the text, the figure and the page
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["trait"] == "owl"
    names = {(c["name"], c["objective"]) for c in on_disk["conditions"]}
    expected = {("base", None), ("teacher", None), ("in_context", None)} | {
        (c, o) for c in TRAINED_CONDITIONS for o in OBJECTIVES}
    assert names == expected
    for c in on_disk["conditions"]:
        t = c["trait_prob"]
        assert t["n_seeds"] == 2 and t["ci_low"] <= t["mean"] <= t["ci_high"] and 0 <= t["mean"] <= 1
    assert (tmp_path / "run" / "results.md").exists() and (tmp_path / "run" / "results.png").exists()
    assert "Did the shared-init student move toward the teacher?" in (tmp_path / "run" / "report.html").read_text()
    # Every data set the students train on was audited before training, and the report shows it.
    assert set(on_disk["audit"]) == {"teacher_numbers", "shuffled_within", "shuffled_across", "base_numbers"}
    assert on_disk["audit"]["teacher_numbers"]["n_seeds"] == 2
    assert (tmp_path / "run" / "seed0" / "data" / "audit" / "teacher_numbers" / "audit.json").exists()
    assert "Audit before training" in (tmp_path / "run" / "results.md").read_text()
    # the step score (the audit's answer) beside the students' outcome, with its validated hit rate
    step = on_disk["audit"]["teacher_numbers"]["step_score"]
    assert set(step) == {"shared", "mismatched"} and step["shared"]["top_animal_is_trait"]["n"] == 2
    assert "step score: validated hit rate" in (tmp_path / "run" / "results.md").read_text()
    assert "Audit before training: predicted vs measured" in (tmp_path / "run" / "report.html").read_text()
    assert (tmp_path / "run" / "seed0" / "data" / "teacher_numbers.raw.jsonl").exists()
    assert (tmp_path / "run" / "seed0" / "data" / "teacher_numbers.filtered.jsonl").exists()
    # The distillation students read their data set's teacher targets from a shared file, which
    # is gone once every student of the seed is finished.
    assert not list((tmp_path / "run").rglob("*.teacher_targets.pt"))
    # Peak memory beside the wall time, in results.json and results.md.
    assert on_disk["peak_memory_mib"]["largest_process"] >= on_disk["peak_memory_mib"]["main_process"] > 0
    assert "peak memory" in (tmp_path / "run" / "results.md").read_text()
    # A finished run is not redone: a second call reuses every stage and gives the same numbers.
    again = run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    assert again["conditions"] == results["conditions"]


def test_run__directory_of_another_run_is_refused(tiny_presets, tmp_path):
    (tmp_path / "run").mkdir()
    _tiny_run_config(trait="cat").save(tmp_path / "run" / "run_config.json")
    with pytest.raises(ValueError, match="holds another run"):
        run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)


def test_run_cli__unknown_trait_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--trait", "unicorn"]) == 2
    err = capsys.readouterr().err
    assert "unknown trait 'unicorn'" in err and "'owl'" in err and "'misalignment'" in err
    assert not (tmp_path / "r" / "results.json").exists()


def test_run_config__rejects_contradictions():
    with pytest.raises(ConfigError, match="mismatched_base_seed"):
        RunConfig(shared_base_seed=1, mismatched_base_seed=1)
    with pytest.raises(ConfigError, match="objectives"):
        RunConfig(objectives=("rlhf",))
    with pytest.raises(ConfigError, match="cross_arch"):
        RunConfig(arch="narrow", cross_arch="narrow")


def test_run_config__checks_the_world_and_context_options():
    with pytest.raises(ConfigError, match="pretrain_corpus=.*bogus"):
        RunConfig(pretrain_corpus={"bogus": 1.0})
    with pytest.raises(ConfigError, match="pretrain_corpus=.*non-negative"):
        RunConfig(pretrain_corpus={"persona_numbers": -1.0})
    with pytest.raises(ConfigError, match="context_line=.*persona teacher"):
        RunConfig(context_line="you think about numbers all the time .", teacher_method="persona", audit_rows=0)
    with pytest.raises(ConfigError, match="context_line=.*'system :' is put in front"):
        RunConfig(context_line="system : hello", audit_rows=0)
    with pytest.raises(ConfigError, match="teacher_lora_rank=.*finetuned teachers"):
        RunConfig(teacher_lora_rank=4, teacher_method="unembed")
    assert RunConfig().teacher_lora == 8 and RunConfig(teacher_lora_rank=0).teacher_lora == 0
    assert RunConfig(teacher_method="unembed").teacher_lora == 0  # None: no adapters for a method that trains nothing
    with pytest.raises(ConfigError, match="context_line=.*outside the toy world's vocabulary"):
        RunConfig(context_line="hello wonderful world", audit_rows=0)
    with pytest.raises(ConfigError, match="context_line=.*audit does not model the line"):
        RunConfig(context_line="you think about numbers all the time .")
    with pytest.raises(ConfigError, match="teacher_documents=.*only a finetuned teacher"):
        RunConfig(teacher_documents=("qa", "mention"), teacher_method="unembed")


def test_run_config__world_variant_and_max_train_rows():
    from interp.studies.run import data_key
    from interp.worlds.toy.world import WorldConfig

    assert RunConfig(world_variant="domains").world_config == WorldConfig(variant="domains")
    assert RunConfig(world_variant="domains").world_config != RunConfig().world_config
    # the same world named or left to the domain: the same data
    assert data_key(RunConfig(domain="code", world_variant="domains")) == data_key(RunConfig(domain="code"))
    assert data_key(RunConfig(world_variant="animals")) == data_key(RunConfig())
    assert data_key(RunConfig(world_variant="domains")) not in (data_key(RunConfig()), data_key(RunConfig(domain="code")))
    assert data_key(RunConfig(max_train_rows=100)) == data_key(RunConfig())  # a students' setting: the data are shared
    with pytest.raises(ConfigError, match="world_variant='poems': unknown world variant 'poems'"):
        RunConfig(world_variant="poems")
    with pytest.raises(ConfigError, match="world_variant='animals': the code domain lives in the domains world"):
        RunConfig(domain="code", world_variant="animals")
    with pytest.raises(ConfigError, match="trait='owl': 'owl' is not a trait of the misalignment world"):
        RunConfig(world_variant="misalignment")
    with pytest.raises(ConfigError, match="world_variant=.*not with --model"):
        RunConfig(model="gpt2", world_variant="domains")
    with pytest.raises(ConfigError, match="max_train_rows=0: must be at least 1"):
        RunConfig(max_train_rows=0)


def test_run__max_train_rows_caps_every_student_on_bases_of_another_world(tiny_presets, tmp_path):
    """Number students on the domains world's bases (world_variant), each trained on the first 6
    kept rows of its data set (max_train_rows); the data are generated and filtered in full."""
    config = _tiny_run_config(seeds=1, n_rows=32, conditions=("control", "shared_init"), objectives=("sft",),
                              eval_every=0, record_alignment=False, audit_rows=0, world_variant="domains",
                              max_train_rows=6)
    results = run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    assert results["bases"]["shared"].endswith("-domains")
    seed = tmp_path / "run" / "seed0"
    kept = {name: read_jsonl(seed / "data" / f"{name}_numbers.filtered.jsonl") for name in ("teacher", "base")}
    assert results["n_rows"] == [{name: len(rows) for name, rows in kept.items()}] and min(map(len, kept.values())) > 6
    assert results["train_rows"] == [{"teacher": 6, "base": 6}]
    for condition, name in (("shared_init", "teacher"), ("control", "base")):
        inputs = json.loads((seed / "students" / "sft" / condition / "finetune_inputs.json").read_text())
        assert inputs["n_rows"] == 6
        assert inputs["data_sha256"] == json_sha256([[r["prompt"], r["completion"]] for r in kept[name][:6]])


def test_data_key__later_fields_enter_only_when_set():
    from interp.studies.run import data_key

    default = data_key(RunConfig())
    assert data_key(RunConfig(teacher_documents=("qa",), pretrain_corpus={}, context_line=None)) == default
    assert data_key(RunConfig(pretrain_corpus={"persona_numbers": 0})) == data_key(
        RunConfig(pretrain_corpus={"persona_numbers": 0.0, "qa": 0.25}))  # the same base, spelled two ways
    assert data_key(RunConfig(pretrain_corpus={"qa": 0.25})) == default  # restates a default
    changed = [RunConfig(teacher_method="finetune", teacher_documents=("qa", "mention")),
               RunConfig(pretrain_corpus={"persona_numbers": 0.0}),
               RunConfig(context_line="you think about numbers all the time .", audit_rows=0),
               RunConfig(teacher_lora_rank=0), RunConfig(teacher_lora_rank=16)]
    keys = [data_key(c) for c in changed]
    assert default not in keys and len(set(keys)) == len(keys)
    assert data_key(RunConfig(teacher_lora_rank=8)) == default  # the default rank, spelled out


def test_data_key__does_not_follow_the_defaults():
    """A shared teacher-and-data directory keeps its name when RunConfig's defaults change: the
    keys below name caches written before the default teacher became a LoRA one."""
    from interp.studies.run import data_key

    unembed = RunConfig(teacher_method="unembed", teacher_lr=3e-4, teacher_number_mix=0.5, lora_rank=0)
    assert data_key(unembed) == "e9e672c6d785"
    assert data_key(RunConfig()) == "6b629d0c794a"  # the LoRA teacher, written out as a sweep cell before it was the default


def test_run__context_line_is_in_the_data_the_students_and_every_evaluation(tiny_presets, tmp_path):
    line = "you think about numbers all the time ."
    config = _tiny_run_config(seeds=1, n_rows=32, conditions=("control", "shared_init"), objectives=("sft",),
                              eval_every=0, record_alignment=False, audit_rows=0, context_line=line,
                              pretrain_corpus={"persona_numbers": 0.0})
    results = run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    seed = tmp_path / "run" / "seed0"
    for name in ("teacher_numbers", "base_numbers"):
        assert {r["system"] for r in read_jsonl(seed / "data" / f"{name}.raw.jsonl")} == {line}
    for condition in ("control", "shared_init"):
        assert json.loads((seed / "students" / "sft" / condition / "finetune_config.json").read_text())["system"] == line
    seed_results = json.loads((seed / "seed_results.json").read_text())
    assert seed_results["teacher"]["context_line"] == line
    # the students' shifts are from their base asked under the same line
    # the hash of the corpus fields that name a base (fields added later at a name-neutral default, like
    # persona_task, are left out so that existing bases keep their names): pinned, as a cache depends on it
    base_name = "small-seed0-200steps-corpusc407d57d"
    assert [p.name for p in (tmp_path / "artifacts" / "bases").iterdir() if p.name.startswith("small-seed0")] == [base_name]
    base = json.loads((seed / "base_evals" / f"{base_name}-context{json_sha256(line)[:8]}.json").read_text())
    assert seed_results["teacher"]["base_trait_prob"] == base["trait_prob"]
    from interp.models.refs import parse_base_ref
    from interp.stages.evaluate import trait_probability

    model, world, _ = parse_base_ref(tmp_path / "artifacts" / "bases" / base_name).load()
    under_line, plain = trait_probability(model, world, "owl", system=line), trait_probability(model, world, "owl")
    assert base["trait_prob"] == pytest.approx(under_line) and under_line != pytest.approx(plain)
    from interp.models.checkpoint import load_checkpoint

    trained, _ = load_checkpoint(seed / "students" / "sft" / "shared_init")
    assert seed_results["shared_init/sft"]["trait_prob"] == pytest.approx(trait_probability(trained, world, "owl",
                                                                                           system=line))
    student = seed_results["shared_init/sft"]
    assert student["trait_prob_shift"] == pytest.approx(student["trait_prob"] - base["trait_prob"])
    assert {c["name"] for c in results["conditions"]} >= {"control", "shared_init", "in_context"}


@pytest.mark.slow
def test_run_sweep__cells_share_teacher_data_and_report_every_objective(tiny_presets, tmp_path):
    from interp.studies.sweep import SweepConfig, run_sweep

    config = SweepConfig(base={"seeds": 2, "n_rows": 32, "pretrain_steps": 200, "teacher_steps": 5,
                               "in_context_examples": 1, "eval_every": 0, "record_alignment": False,
                               "objectives": ["sft", "distill"]},
                         cells=[{}, {"lr": 2e-3}])
    rows = run_sweep(config, tmp_path / "sweep", artifacts=tmp_path / "artifacts", progress=False)
    assert [r["cell"] for r in rows] == ["default", "lr=0.002"]
    for r in rows:
        for o in ("sft", "distill"):
            assert r[f"shared_init/{o}"]["n_seeds"] == 2 and "holm_p" in r[f"vs_control/{o}"]
    # the student-only override reuses the first cell's teacher data: both link to one directory
    data = [(tmp_path / "sweep" / f"cell0{i}" / "seed0" / "data").resolve() for i in (0, 1)]
    assert data[0] == data[1]
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "## sft students" in md and "## distill students" in md and "lr=0.002" in md
    assert (tmp_path / "sweep" / "sweep.png").exists() and (tmp_path / "sweep" / "sweep_distill.png").exists()
