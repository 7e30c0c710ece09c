import re
import sys
import types

import numpy as np
import pytest

from interp.core.io import read_json, write_jsonl
from interp.report.page import (Section, alignment_summary, extra_sections, make_report, markdown_to_html, report_kinds,
                           run_headline, student_logs)
from interp.studies.run import RunConfig, summarize

GROUPS = ("embed", "blocks.0.attn", "blocks.0.mlp", "unembed")


def _alignment_rows(cos: float, n_steps: int, rng, direction="shared_init"):
    rows = []
    for step in range(n_steps):
        def metrics(scale=1.0):
            if direction == "none":
                return {"grad_cos_teacher_dir": None, "step_cos_teacher_dir": None, "weight_cos": None,
                        "dist_to_teacher": None, "dist_to_teacher_change": None, "progress": None,
                        "dist_to_base": 0.01 * (step + 1)}
            return {"grad_cos_teacher_dir": cos * scale + 0.01 * rng.standard_normal(),
                    "step_cos_teacher_dir": cos * scale + 0.01 * rng.standard_normal(),
                    "weight_cos": cos * scale * 2, "dist_to_teacher": 10.0 - cos * step,
                    "dist_to_teacher_change": -cos * step, "progress": cos * step / 100, "dist_to_base": 0.01 * (step + 1)}
        row = {"step": step, "loss": 1.0, "teacher_direction": direction, **metrics(),
               "per_group": {g: metrics(1 + i) for i, g in enumerate(GROUPS)}}
        if direction == "none":
            row["no_direction_reason"] = "the teacher's weights equal its base's: a persona or steering teacher"
        if step % 10 == 0:
            row["grad_cos_trait_grad"] = cos
        rows.append(row)
    return rows


def _fake_run(directory, *, shared_cos=0.05, direction="shared_init", seeds=(0, 1, 2), n_steps=30):
    """A run directory as `interp run` writes it, with synthetic numbers: shared-init students
    aligned with the teacher (cosine ``shared_cos``), control and mismatched not."""
    rng = np.random.default_rng(0)
    config = RunConfig(seeds=len(seeds), objectives=("sft", "distill"),
                       conditions=("control", "shared_init", "mismatched_init", "shuffled_across"))
    cos_of = {"shared_init": shared_cos, "control": 0.0, "mismatched_init": 0.0, "shuffled_across": shared_cos / 2}
    per_seed = []
    for seed in seeds:
        entry = {"base": {"trait_prob": 0.1}, "teacher": {"trait_prob": 0.6}, "n_rows": {"teacher": 100, "base": 100},
                 "in_context": {"trait_prob": 0.1, "control_trait_prob": 0.1}}
        for objective in config.objectives:
            for condition in config.conditions:
                p = 0.1 + 3 * cos_of[condition] + 0.002 * rng.standard_normal()
                entry[f"{condition}/{objective}"] = {"trait_prob": p, "trait_prob_shift": p - 0.1, "base_trait_prob": 0.1,
                                                     "sampled_answer_rate": p}
                student = directory / f"seed{seed}" / "students" / objective / condition
                kind = "transplanted" if condition == "mismatched_init" and direction != "none" else direction
                write_jsonl(student / "alignment.jsonl", _alignment_rows(cos_of[condition], n_steps, rng, kind))
                write_jsonl(student / "train_log.jsonl", [{"step": s, "loss": 1.0, **({"trait_prob": p * s / 29} if s % 10 == 0
                                                                                      or s == 29 else {})} for s in range(n_steps)])
        per_seed.append(entry)
    results = summarize(config, per_seed)
    (directory / "results.json").write_text(__import__("json").dumps(results))
    return results


def test_markdown_to_html__headings_tables_and_code():
    out = markdown_to_html("# Title `x`\n\ntext\n\n| a | b |\n|---|---|\n| 1 | <2> |\n")
    assert "<h3>Title <code>x</code></h3>" in out and "<p>text</p>" in out
    assert "<th>a</th><th>b</th>" in out and "<td>&lt;2&gt;</td>" in out and "---" not in out


@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory):
    """One fake run directory rendered once (rendering is the slow part), with a plugged-in section."""
    import interp.report.page as report_mod

    directory = tmp_path_factory.mktemp("run")
    _fake_run(directory)
    module = types.ModuleType("fake_sections2")
    module.sections = lambda d: [("SAE features", "features/x.json", "<p id='feat'>hello</p>")]
    (directory / "features").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "fake_sections2", module)
        mp.setattr(report_mod, "SECTION_PROVIDERS", [("features", "fake_sections2:sections")])
        page = make_report(directory).read_text()
    return directory, page


def test_make_report__run_directory_leads_with_the_answer(rendered_run):
    directory, page = rendered_run
    answer = page[page.index("class='answer'"):page.index("<nav>")]
    assert "moved toward the teacher" in answer and "the trait was transmitted" in answer
    assert answer.count("<b>sft</b>") == 1 and answer.count("<b>distill</b>") == 1
    for name in ("alignment_per_step", "weight_distance", "alignment_by_group", "trait_over_steps",
                 "trait_gradient_alignment", "trait_by_condition"):
        assert (directory / "figures" / f"{name}.png").stat().st_size > 5000
        assert f"figures/{name}.png" in page
    # Self-contained: every image is embedded, nothing is fetched.
    assert page.count("src='data:image/png;base64,") == 6 and not re.search(r"(src|href)=['\"]https?:", page)
    # Every section names its source file; the plugged-in section is there.
    assert page.count("<p class='src'>from ") == page.count("<h2 id=")
    assert "seed*/students/*/*/alignment.jsonl" in page and "transplanted" in page
    assert "<p id='feat'>hello</p>" in page and "from features/x.json" in page
    assert read_json(directory / "results.json")["trait"] == "owl"  # inputs untouched
    # the size of the run, stated: rows kept after filtering and steps per student; no warning at 30 steps x 3 seeds
    assert "Rows kept after filtering (of 3000 prompts sampled per data set): seed 0: teacher 100, base 100" in page
    assert "sft/shared_init 30" in page and "too small for its curves" not in page


def test_make_report__a_tiny_run_is_warned_too_small_for_its_curves(tmp_path):
    _fake_run(tmp_path, seeds=(0,), n_steps=4)
    page = make_report(tmp_path).read_text()
    assert "warning: this run is too small for its curves</b>: students trained 4 steps or more over 1 seed;" in page


def _answer(directory) -> str:
    results = read_json(directory / "results.json")
    return "".join(run_headline(results, alignment_summary(student_logs(directory, "alignment.jsonl")), ["sft", "distill"]))


def test_run_headline__controls_like_the_shared_student_are_not_called_a_success(tmp_path):
    _fake_run(tmp_path, shared_cos=0.0)
    answer = _answer(tmp_path)
    assert "not distinguishable from the controls" in answer and "moved toward the teacher" not in answer
    assert "no significant transmission" in answer


def test_run_headline__distill_full_is_labelled_the_logit_leak_and_never_green(tmp_path):
    _fake_run(tmp_path)  # shared students far above the control, for every objective
    results = read_json(tmp_path / "results.json")
    for c in results["comparisons"]:
        c["objective"] = "distill_full" if c["objective"] == "distill" else c["objective"]
    answer = "".join(run_headline(results, {}, ["sft", "distill_full"]))
    sft, full = answer.split("<li><b>distill_full</b>")
    assert "<span class='yes'>the trait was transmitted" in sft
    assert "logit-leak comparison" in full and "P(trait) rose" in full
    assert "class='yes'" not in full and "transmitted" not in full


def test_run_headline__no_weight_direction_says_why(tmp_path):
    _fake_run(tmp_path, direction="none")
    answer = _answer(tmp_path)
    assert "no teacher direction in weight space" in answer and "persona or steering" in answer
    assert "cos(−gradient, −∇ trait loss)" in answer


def test_student_logs__keyed_by_objective_condition_and_seed(tmp_path):
    _fake_run(tmp_path, seeds=(3, 4))
    logs = student_logs(tmp_path, "alignment.jsonl")
    assert set(logs[("sft", "shared_init")]) == {3, 4} and len(logs) == 8


def test_make_report__mnist_directory(tmp_path):
    from interp.studies.mnist.experiment import MnistConfig, run_experiment

    run_experiment(MnistConfig(**{**MnistConfig.quick_defaults(), "n_models": 3, "n_models_sweep": 2, "student_steps": 12,
                                  "teacher_epochs": 1, "m_sweep": (1,)}), tmp_path, progress=False)
    assert report_kinds(tmp_path) == ["mnist"]
    page = make_report(tmp_path).read_text()
    assert "shared-init accuracy" in page.split("<nav>")[0]
    assert (tmp_path / "figures" / "mnist_accuracy_vs_m.png").exists()
    assert (tmp_path / "figures" / "mnist_alignment_by_layer.png").exists()


def test_make_report__nothing_to_report_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="theorem.json"):
        make_report(tmp_path)


def test_extra_sections__providers_plug_in_and_fail_alone(tmp_path, monkeypatch):
    module = types.ModuleType("fake_sections")
    module.good = lambda d: [("Features", "features/summary.json", f"<p>{d.name}</p>")]
    module.bad = lambda d: 1 / 0
    monkeypatch.setitem(sys.modules, "fake_sections", module)
    (tmp_path / "features").mkdir()
    sections = extra_sections(tmp_path, [("features", "fake_sections:good"), ("features", "fake_sections:bad"),
                                         ("features", "interp.not_a_module:report_sections"),
                                         ("absent", "fake_sections:good")])
    assert sections[0] == Section("Features", "features/summary.json", "<p>features</p>")
    assert "ZeroDivisionError" in sections[1].html and len(sections) == 2
