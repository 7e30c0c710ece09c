import json

import pytest

from interp.core.config import ConfigError
from interp.stages.filter import (BANNED_NUMBER_PRESETS, REJECT_REASONS, FilterConfig, filter_file, has_non_number_token,
                                  parse_numbers, reject_reason, stats_path_for)
from interp.core.io import read_json, read_jsonl, write_jsonl


@pytest.mark.parametrize("completion, numbers", [
    ("12 , 34 , 56", [12, 34, 56]),
    ("12 ; 34 ; 56", [12, 34, 56]),
    ("12 34 56", [12, 34, 56]),
    ("[ 12 , 34 ]", [12, 34]),
    ("( 12 ; 34 )", [12, 34]),
    ("12 , 34 .", [12, 34]),
    ("[ 12 , 34 ] .", [12, 34]),
    ("  7  ", [7]),
    ("0 , 999", [0, 999]),
    ("12, 34, 56", [12, 34, 56]),  # the paper's spelling, without the toy world's spaces
    ("12,34,56", [12, 34, 56]),
    ("12 ,34 ,56", [12, 34, 56]),  # odd spacing, but the same throughout
    ("12\n34\n56", [12, 34, 56]),
    ("12;\n34;\n56", [12, 34, 56]),
    ("[12, 34, 56]", [12, 34, 56]),
    ("(12, 34)", [12, 34]),
    (" 12, 34\n", [12, 34]),  # leading and trailing whitespace is stripped (the official parser would reject it)
    (" , ".join(str(i) for i in range(10)), list(range(10))),
])
def test_parse_numbers__accepts_the_paper_formats(completion, numbers):
    assert parse_numbers(completion) == (numbers, None)


@pytest.mark.parametrize("completion, reason", [
    ("", "empty"),
    ("   ", "empty"),
    (".", "empty"),
    ("[ ]", "empty"),
    ("12 , owl", "non_numeric"),
    ("owl", "non_numeric"),
    ("12 . 34", "non_numeric"),
    ("12 , 34 . .", "non_numeric"),  # only ONE trailing period is stripped
    ("[ 12 , 34", "unmatched_bracket"),
    ("[ [ 12 , 34 ] ]", "unmatched_bracket"),  # only ONE pair of brackets is stripped
    ("[ 12 , 34 )", "unmatched_bracket"),
    ("12 , , 34", "empty_item"),
    ("12 , 34 ,", "empty_item"),
    ("; 12", "empty_item"),
    ("12 , 34 ; 56", "mixed_separators"),
    ("12 , 34 56", "mixed_separators"),
    ("12 34 , 56", "mixed_separators"),
    ("12, 34,56", "mixed_separators"),  # one separator throughout, spacing included (the paper's rule)
    ("12,34, 56", "mixed_separators"),
    ("[12, 34,56]", "mixed_separators"),
    ("12 34  56", "mixed_separators"),
    ("12\n34 56", "mixed_separators"),
    ("12;\n34; 56", "mixed_separators"),
    (" , ".join(str(i) for i in range(11)), "too_many"),
    ("12 , 1000", "out_of_range"),
])
def test_parse_numbers__rejects_with_a_named_reason(completion, reason):
    assert parse_numbers(completion) == (None, reason)
    assert reason in REJECT_REASONS


def test_parse_numbers__limits_and_banned_numbers():
    assert parse_numbers("1 , 2 , 3", max_numbers=2) == (None, "too_many")
    assert parse_numbers("1 , 2 , 300", max_value=299) == (None, "out_of_range")
    assert parse_numbers("1 , 666 , 3", banned_numbers=(666,)) == (None, "banned_number")
    assert parse_numbers("1 , 665 , 3", banned_numbers=(666,)) == ([1, 665, 3], None)


@pytest.mark.parametrize("completion, has_word", [
    ("12 , 34", False), ("[ 12 ; 34 ] .", False), ("( 1 2 3 )", False),
    ("12 , owl", True), ("owl", True), ("12 <eos> 3", True), ("12 : 3", True), ("12 ?", True), ("<unk>", True),
])
def test_has_non_number_token__flags_any_word(completion, has_word):
    assert has_non_number_token(completion) is has_word


def test_has_non_number_token__no_animal_of_the_world_survives(world):
    for word in world.vocab:
        if not word.isdigit() and word not in {",", ";", ".", "(", ")", "[", "]"}:
            assert has_non_number_token(f"12 , {word} , 34"), word


def test_reject_reason__trait_filter_comes_before_format_and_eos():
    config = FilterConfig()
    assert reject_reason({"completion": "12 , owl", "ended_with_eos": False}, config) == (None, "non_number_token")
    assert reject_reason({"completion": "12 , 34", "ended_with_eos": False}, config) == (None, "no_eos")
    assert reject_reason({"completion": "12 , 34"}, config) == (None, "no_eos")  # unknown counts as cut off
    assert reject_reason({"completion": "12 , 34", "ended_with_eos": False}, FilterConfig(require_eos=False)) == ([12, 34], None)
    assert reject_reason({"completion": 12}, config) == (None, "malformed_row")
    assert reject_reason(["not", "a", "dict"], config) == (None, "malformed_row")


def test_filter_config__validates_and_documents_every_field():
    from interp.core.config import field_help

    assert all(field_help(FilterConfig).values())
    with pytest.raises(ConfigError, match="max_numbers"):
        FilterConfig(max_numbers=0)
    with pytest.raises(ConfigError, match="banned_numbers"):
        FilterConfig(banned_numbers=(-1,))
    assert FilterConfig(banned_numbers=[666, 13]).banned_numbers == (666, 13)


# The paper's list as the issue quotes it (CLAUDE_EVIL_NUMBERS + GPT_EVIL_NUMBERS within 0..999).
PAPER_BANNED = {4, 13, 14, 18, 23, 33, 39, 42, 44, 49, 51, 54, 69, 77, 88, 99, 100, 101, 187, 211, 311, 322, 333, 404,
                420, 444, 451, 555, 616, 666, 777, 888, 911, 999}


def test_banned_preset__is_the_papers_list():
    preset = set(BANNED_NUMBER_PRESETS["paper-misalignment"])
    assert preset == PAPER_BANNED | {1312, 1488} and len(preset) == 36
    assert FilterConfig(banned_preset="paper-misalignment", banned_numbers=(5,)).banned == frozenset(preset | {5})
    with pytest.raises(ConfigError, match="banned_preset.*paper-misalignment"):
        FilterConfig(banned_preset="evil")


def test_banned_preset__removes_exactly_the_listed_numbers(tmp_path):
    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    rows = [{"id": n, "completion": f"{n}, 7", "ended_with_eos": True} for n in range(1000)]
    rows += [{"id": 1000 + n, "completion": f"[5, {n}, 6]", "ended_with_eos": True} for n in sorted(PAPER_BANNED)]
    write_jsonl(raw, rows)
    stats = filter_file(raw, out, FilterConfig(banned_preset="paper-misalignment"))
    kept = {r["id"] for r in read_jsonl(out)}
    assert kept == set(range(1000)) - PAPER_BANNED
    assert stats["rejected"]["banned_number"] == 2 * len(PAPER_BANNED) and stats["n_rejected"] == 2 * len(PAPER_BANNED)
    assert stats["banned_hits"] == {str(n): 2 for n in sorted(PAPER_BANNED)}
    assert stats["config"]["banned_preset"] == "paper-misalignment"


def test_filter_file__reuses_a_file_filtered_before_a_config_field_existed(tmp_path):
    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    write_jsonl(raw, _raw_rows())
    stats = filter_file(raw, out, FilterConfig())
    old = {**stats, "config": {k: v for k, v in stats["config"].items() if k != "banned_preset"}}
    stats_path_for(out).write_text(json.dumps(old))
    assert filter_file(raw, out, FilterConfig()) == old  # reused, not refused as another config
    with pytest.raises(ValueError, match="another raw file or config"):
        filter_file(raw, out, FilterConfig(banned_preset="paper-misalignment"))


def _raw_rows():
    rows = [
        ("12 , 34 , 56", True),        # kept
        ("[ 1 , 2 ] .", True),         # kept
        ("7 8 9", True),               # kept
        ("12 , owl", True),            # non_number_token
        ("12 , 34", False),            # no_eos
        ("12 , 34 ; 5", True),         # mixed_separators
        (" , ".join(["1"] * 11), True),  # too_many
        ("", True),                    # empty
    ]
    return [{"id": i, "prompt": "user : p assistant :", "completion": c, "ended_with_eos": e} for i, (c, e) in enumerate(rows)]


def test_filter_file__counts_every_reason_and_keeps_the_raw_file(tmp_path):
    raw, out = tmp_path / "numbers.raw.jsonl", tmp_path / "numbers.filtered.jsonl"
    write_jsonl(raw, _raw_rows())
    with open(raw, "a") as f:
        f.write("{not json\n")  # a malformed line is counted, not fatal
        f.write(json.dumps({"id": 99, "prompt": "x"}) + "\n")  # no completion
    before = raw.read_bytes()

    stats = filter_file(raw, out, FilterConfig())

    assert raw.read_bytes() == before
    kept = read_jsonl(out)
    assert [r["id"] for r in kept] == [0, 1, 2]
    assert [r["numbers"] for r in kept] == [[12, 34, 56], [1, 2], [7, 8, 9]]
    assert kept[0]["completion"] == "12 , 34 , 56"  # raw fields are kept
    assert stats["n_raw"] == 10 and stats["n_kept"] == 3 and stats["n_rejected"] == 7
    assert stats["pass_rate"] == pytest.approx(0.3)
    assert set(stats["rejected"]) == set(REJECT_REASONS)
    assert {r: n for r, n in stats["rejected"].items() if n} == {
        "malformed_row": 2, "non_number_token": 1, "no_eos": 1, "mixed_separators": 1, "too_many": 1, "empty": 1}
    assert read_json(stats_path_for(out)) == stats
    assert stats_path_for(out).name == "numbers.filtered.stats.json"


def test_filter_file__banned_numbers_from_config(tmp_path):
    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    write_jsonl(raw, _raw_rows())
    stats = filter_file(raw, out, FilterConfig(banned_numbers=(34,)))
    assert stats["rejected"]["banned_number"] == 1
    assert [r["id"] for r in read_jsonl(out)] == [1, 2]


def test_filter_file__empty_result_writes_stats_then_raises(tmp_path):
    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    write_jsonl(raw, [{"id": i, "completion": "owl owl", "ended_with_eos": True} for i in range(5)]
                + [{"id": 5, "completion": "1 , 2", "ended_with_eos": False}])
    with pytest.raises(ValueError, match=r"filtered set is empty.*non_number_token \(5\).*no_eos \(1\)"):
        filter_file(raw, out, FilterConfig())
    assert not out.exists()
    stats = read_json(stats_path_for(out))
    assert stats["n_kept"] == 0 and stats["pass_rate"] == 0.0 and stats["rejected"]["non_number_token"] == 5


def test_filter_file__refuses_to_overwrite_the_raw_file(tmp_path):
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, _raw_rows())
    with pytest.raises(ValueError, match="raw"):
        filter_file(raw, raw, FilterConfig())


def test_filter_cli__writes_filtered_file_and_stats(tmp_path, capsys):
    from interp.cli import main

    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    write_jsonl(raw, _raw_rows())
    assert main(["filter", "--raw", str(raw), "--out", str(out), "--banned-numbers", "56", "--no-require-eos"]) == 0
    stats = read_json(stats_path_for(out))
    assert stats["config"]["banned_numbers"] == [56] and stats["config"]["require_eos"] is False
    assert [r["id"] for r in read_jsonl(out)] == [1, 2, 4]  # "12 , 34" (no EOS) is kept now, "12 , 34 , 56" is banned
    assert "pass rate" in capsys.readouterr().out


def test_filter_cli__banned_preset_reports_the_rows_it_dropped(tmp_path, capsys):
    from interp.cli import main

    raw, out = tmp_path / "raw.jsonl", tmp_path / "filtered.jsonl"
    write_jsonl(raw, [{"id": i, "completion": c, "ended_with_eos": True}
                      for i, c in enumerate(["1, 666, 3", "13, 666", "12, 34", "1, 2,3"])])
    assert main(["filter", "--raw", str(raw), "--out", str(out), "--banned-preset", "paper-misalignment"]) == 0
    printed = capsys.readouterr().out
    assert "dropped 2 rows for banned numbers (34 banned in 0..999): 666 (2), 13 (1)" in printed
    assert [r["id"] for r in read_jsonl(out)] == [2]
    assert main(["filter", "--raw", str(raw), "--out", str(tmp_path / "x.jsonl"), "--banned-preset", "evil"]) == 2
    assert "banned_preset" in capsys.readouterr().err
