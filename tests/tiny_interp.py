"""Tiny settings shared by the end-to-end tests, and ``python tests/tiny_interp.py ARGS``: the
``interp`` command with the test-sized architecture presets, for subprocess tests of
``interp run`` (whose bases are named by preset).

``python tests/tiny_interp.py run ...`` is ``python -m interp run ...`` with ``small`` and
``narrow`` replaced by 1-layer models and bases pretrained briefly at a high learning rate
(:func:`use_tiny_presets`, the same patch ``tests/test_run.py`` applies in-process)."""

from __future__ import annotations

import contextlib
import json
import operator
import sys
from pathlib import Path

from conftest import TINY

from interp.models.checkpoint import ModelConfig

TINY_OTHER = TINY.replace(d_model=48, n_heads=2, d_mlp=96)


@contextlib.contextmanager
def one_torch_thread():
    """One intra-op thread for the block: models this small gain nothing from a second one, and
    on a shared, loaded machine two threads per process wait on each other (observed: the
    tests of tests/test_errors.py took 131 s on 2 threads and 27 s on 1, two runs minutes apart
    at a load average of about 5 on 2 cores). It also matches the subprocesses of the kill tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny_pretrain_config(seed: int, arch: str, steps: int, corpus: dict | None = None, world=None):
    """Replacement of ``interp.stages.pretrain.base_config`` in ``interp.studies.run``: few warm-up
    steps, a high learning rate."""
    from interp.stages.pretrain import PretrainConfig
    from interp.worlds.toy.corpus import CorpusConfig
    from interp.worlds.toy.world import WorldConfig

    return PretrainConfig(seed=seed, arch=arch, steps=steps, warmup_steps=10, lr=1e-2, corpus=CorpusConfig(**(corpus or {})),
                          world=world or WorldConfig())


def use_tiny_presets(setitem=operator.setitem, setattr_=setattr) -> None:
    """Tiny ``small`` and ``narrow`` presets; pass a pytest monkeypatch's ``setitem``/``setattr``
    to undo it after a test."""
    import interp.stages.pretrain as pretrain_mod
    import interp.studies.run as run_mod

    setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    setitem(pretrain_mod.ARCH_PRESETS, "narrow", TINY_OTHER)
    setattr_(run_mod, "base_config", tiny_pretrain_config)


def in_one_process(argv: list[str]) -> list[str]:
    """``interp`` arguments with ``--workers 1`` added to ``run`` and ``sweep``: the tiny presets
    (and a test's log capture) live in this process only, not in spawned workers."""
    if argv[:1] in (["run"], ["sweep"]) and "--workers" not in argv:
        return [*argv, "--workers", "1"]
    return list(argv)


def tiny_pretrain_json(path: Path, architecture: ModelConfig = TINY, **overrides) -> Path:
    """A PretrainConfig JSON file with a custom tiny architecture, for ``interp pretrain --config``."""
    config = {"arch": "custom", "architecture": architecture.to_dict(), "steps": 30, "batch_size": 16,
              "warmup_steps": 2, "lr": 3e-3, **overrides}
    path.write_text(json.dumps(config))
    return path


def pretrain_tiny_base(out: Path, **overrides) -> Path:
    """A briefly pretrained tiny base at ``out`` (in this process)."""
    from interp.stages.pretrain import PretrainConfig, pretrain

    config = PretrainConfig.from_dict(json.loads(tiny_pretrain_json(out.parent / f"{out.name}.json", **overrides).read_text()))
    return pretrain(config, out, artifacts=out.parent / f"{out.name}-artifacts", progress=False)


def number_rows(world, n: int, seed: int = 0) -> list[dict]:
    """Filtered-looking rows (prompt, completion, numbers) of well-formed number answers."""
    import numpy as np

    from interp.stages.filter import parse_numbers
    from interp.worlds.toy.corpus import CorpusGenerator

    gen, rng = CorpusGenerator(world), np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        completion = gen.number_answer(rng, seeds, n_max, sep)
        rows.append({"id": i, "prompt": prompt, "completion": completion,
                     "numbers": parse_numbers(completion, max_numbers=100)[0]})
    return rows


if __name__ == "__main__":
    from interp.cli import main

    use_tiny_presets()
    sys.exit(main(in_one_process(sys.argv[1:])))
