"""The Python page of the documentation runs as written: every ``python`` block of
``docs/python.md``, in order, in one namespace, parsed and run by Sybil (the library that tests
documentation examples), in a temporary directory."""

from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

PAGE = Path(__file__).parents[1] / "docs" / "python.md"


@pytest.mark.slow
def test_docs_python__every_code_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the page writes under runs/
    document = Sybil(parsers=[PythonCodeBlockParser()]).parse(PAGE)
    examples = list(document)
    assert len(examples) == 2  # the quick start and "your own two models"
    for example in examples:
        example.evaluate()
    namespace = document.namespace
    assert namespace["recorder"].records and len(namespace["recorder"].records) == len(namespace["log"])
    assert namespace["audit"]["n_rows"] == 48
    assert (tmp_path / "runs" / "python" / "student").is_dir()
