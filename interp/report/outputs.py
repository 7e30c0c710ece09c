"""Everything a finished results directory gets besides its data: the text and figures of its
kind, and ``report.html`` (:func:`interp.report.page.make_report`). The commands call these after
the computation; the studies themselves only write their results files."""

from __future__ import annotations

import logging
from pathlib import Path

from interp.core.io import atomic_write_text, read_json
from interp.report.mnist import write_mnist_outputs
from interp.report.page import make_report
from interp.report.run import RESULTS_MD_FILE, RESULTS_PNG_FILE, plot_results, results_markdown
from interp.report.theorem import write_theorem_outputs
from interp.studies.mnist.experiment import CONFIG_FILE as MNIST_CONFIG_FILE
from interp.studies.mnist.experiment import RESULTS_FILE as MNIST_RESULTS_FILE
from interp.studies.mnist.experiment import MnistConfig
from interp.studies.run import RESULTS_FILE
from interp.studies.theorem import THEOREM_FILE

log = logging.getLogger(__name__)


def _html(directory: Path) -> None:
    try:
        make_report(directory)  # report.html and figures/, from the files just written
    except Exception as e:  # the results are on disk; a failed report must not fail the run
        log.error("could not write %s/report.html (%s: %s); the results are saved, retry with `interp report %s`",
                  directory, type(e).__name__, e, directory)


def finish_run(directory: str | Path) -> None:
    """``results.md``, ``results.png`` and ``report.html`` of an ``interp run`` directory."""
    directory = Path(directory)
    results = read_json(directory / RESULTS_FILE)
    atomic_write_text(directory / RESULTS_MD_FILE, results_markdown(results))
    plot_results(results, directory / RESULTS_PNG_FILE)
    _html(directory)


def finish_theorem(directory: str | Path) -> None:
    """``theorem.md``, the figures and ``report.html`` of an ``interp theorem`` directory."""
    directory = Path(directory)
    write_theorem_outputs(read_json(directory / THEOREM_FILE), directory)
    _html(directory)


def finish_mnist(directory: str | Path) -> None:
    """``results.md`` and the two figures of an ``interp mnist`` directory (its HTML page is
    ``interp report DIR``)."""
    directory = Path(directory)
    config = MnistConfig.load(directory / MNIST_CONFIG_FILE)
    write_mnist_outputs(read_json(directory / MNIST_RESULTS_FILE), directory, config.m)
