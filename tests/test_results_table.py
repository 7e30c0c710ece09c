"""The main result's table: rendered from the committed results file, equal in the README and the
docs to what `interp results-table` renders (so the run, the README and the docs cannot disagree)."""

import json
from pathlib import Path

import numpy as np
import pytest

from interp.cli import main as cli_main
from interp.report.main_result import (DEFAULT_DOCUMENTS, DEFAULT_FIGURE, DEFAULT_RESULTS_FILE, TABLE_END, TABLE_START,
                                       current_block, main_result, publish_main_result, render_table, replace_block,
                                       stale_documents)
from interp.studies.run import RunConfig, summarize

REPO = Path(__file__).resolve().parents[1]


def _results(shared_shift=0.08, seeds=3):
    """results.json as `interp run` writes it (through `summarize`), synthetic numbers."""
    rng = np.random.default_rng(0)
    config = RunConfig(seeds=seeds, objectives=("sft", "distill"))
    shift = {"shared_init": shared_shift, "shuffled_across": shared_shift / 2}
    per_seed = []
    for _ in range(seeds):
        entry = {"base": {"trait_prob": 0.119}, "teacher": {"trait_prob": 0.997}, "n_rows": {"teacher": 2850, "base": 2870},
                 "in_context": {"trait_prob": 0.117, "control_trait_prob": 0.119}}
        for objective in config.objectives:
            for condition in config.conditions:
                s = shift.get(condition, 0.0) + 0.01 * rng.standard_normal()
                entry[f"{condition}/{objective}"] = {"trait_prob": 0.119 + s, "trait_prob_shift": s, "base_trait_prob": 0.119,
                                                     "sampled_answer_rate": 0.5}
        per_seed.append(entry)
    return summarize(config, per_seed)


def _repo(tmp_path, results):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    docs = [tmp_path / d for d in DEFAULT_DOCUMENTS]
    docs[1].parent.mkdir()
    for d in docs:
        d.write_text(f"# title\n\n{TABLE_START}\nold table\n{TABLE_END}\n\nafter\n")
    paths = {"results_file": tmp_path / "docs/results/main_run.json", "figure": tmp_path / "docs/figures/main_run.png",
             "documents": tuple(docs)}
    return run, paths


def test_main_result__keeps_one_objective_the_config_and_seeds():
    result = main_result(_results(), "sft")
    assert result["seeds"] == [0, 1, 2] and result["config"]["seeds"] == 3 and result["trait"] == "owl"
    assert {c["objective"] for c in result["conditions"]} == {None, "sft"}
    assert {(c["a"], c["b"]) for c in result["comparisons"]} == {
        ("shared_init", "control"), ("shared_init", "mismatched_init"), ("shared_init", "shuffled_across")}
    assert all(c["objective"] == "sft" for c in result["comparisons"])
    with pytest.raises(ValueError, match="no 'distill_full' students"):
        main_result(_results(), "distill_full")


def test_render_table__shows_every_condition_and_comparison_with_its_interval(tmp_path):
    results = _results()
    table = render_table(main_result(results), document=Path("README.md"))
    sft = {c["name"]: c for c in results["conditions"] if c["objective"] in (None, "sft")}
    for name, c in sft.items():
        t = c["trait_prob"]
        assert f"{t['mean']:.3f}" in table and f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]" in table, name
    control = next(c for c in results["comparisons"] if c["objective"] == "sft" and c["b"] == "control")["difference"]
    assert f"**{control['mean']:+.3f}** | [{control['ci_low']:+.3f}, {control['ci_high']:+.3f}] | 3 |" in table
    assert "](docs/figures/main_run.png)" in table and "](docs/results/main_run.json)" in table
    assert "`interp run` with" in table and "`objectives` ['sft', 'distill']" in table  # not the default config: says what differs
    assert "its base" not in table  # every student's base here is the shared one
    result = main_result(results)
    next(c for c in result["conditions"] if c["name"] == "mismatched_init")["own_base_trait_prob"] = 0.128
    assert "| mismatched init (another seed's base), its base 0.128 |" in render_table(result, document=Path("README.md"))
    result["config"]["a_dropped_field"] = 1  # a results file written by an older version still renders
    assert "`a_dropped_field` 1 (a field this version no longer has)" in render_table(result, document=Path("README.md"))
    docs_table = render_table(main_result(results), document=Path("docs/main_run.md"))
    assert "](figures/main_run.png)" in docs_table and "](results/main_run.json)" in docs_table


def test_publish_main_result__writes_file_figure_and_tables_then_check_passes(tmp_path):
    run, paths = _repo(tmp_path, _results())
    publish_main_result(run, **paths)
    assert paths["figure"].stat().st_size > 0
    saved = json.loads(paths["results_file"].read_text())
    for d in paths["documents"]:
        text = d.read_text()
        assert "old table" not in text and text.startswith("# title\n") and text.endswith("\nafter\n")
        assert current_block(text) == render_table(saved, document=d, results_file=paths["results_file"],
                                                   figure=paths["figure"])
    assert stale_documents(**paths) == []
    publish_main_result(run, **paths)  # idempotent
    assert stale_documents(**paths) == []
    # A hand edit of a number, or a results file that changed, is caught.
    readme = paths["documents"][0]
    readme.write_text(readme.read_text().replace("0.119", "0.120", 1))
    assert stale_documents(**paths) == [str(readme)]


def test_publish_main_result__a_document_without_markers_changes_nothing(tmp_path):
    run, paths = _repo(tmp_path, _results())
    paths["documents"][1].write_text("# no markers\n")
    with pytest.raises(ValueError, match="no results-table markers"):
        publish_main_result(run, **paths)
    assert not paths["results_file"].exists() and "old table" in paths["documents"][0].read_text()
    with pytest.raises(ValueError, match="no results-table markers"):
        replace_block(f"{TABLE_END}\n{TABLE_START}\n", "x")


def test_cli__bad_input_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["results-table", str(tmp_path / "nowhere")]) == 2
    assert cli_main(["results-table"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "results.json not found" in err[0] and "give RUN_DIR" in err[1]


def test_cli__check_fails_on_a_stale_table(tmp_path, monkeypatch):
    run, paths = _repo(tmp_path, _results())
    monkeypatch.chdir(tmp_path)
    assert cli_main(["results-table", str(run)]) == 0  # the default paths, relative to the repository root
    assert cli_main(["results-table", "--check"]) == 0
    Path("README.md").write_text(Path("README.md").read_text().replace("shared init − control", "shared − control"))
    assert cli_main(["results-table", "--check"]) == 1


def test_repository__readme_and_docs_show_the_table_the_committed_results_file_renders(monkeypatch):
    monkeypatch.chdir(REPO)
    assert DEFAULT_RESULTS_FILE.is_file() and DEFAULT_FIGURE.is_file()
    assert stale_documents() == [], "run `interp results-table RUN_DIR` (or edit the run, not the table)"
    assert all(TABLE_START in Path(d).read_text() for d in DEFAULT_DOCUMENTS)
