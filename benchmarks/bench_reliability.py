"""What reliability costs, as ratios measured in one run against the obvious alternative.

1. Deterministic kernels (:func:`interp.training.loop.deterministic_algorithms`, on in every training
   loop) against PyTorch's default kernels: time of one AdamW finetuning step of the default
   architecture (2 layers, d_model 128) on a batch of 32 number sequences, both settings
   alternated round by round so that load on the machine hits both alike. Also whether two
   runs of the same steps give bitwise-identical weights under each setting.
2. A resumable finetuning state (weights + AdamW moments, :func:`save_training_state`) against
   one training step: the overhead of saving every ``checkpoint_every`` steps.

Usage::

    python benchmarks/bench_reliability.py --out runs/bench_reliability.json [--rounds 12] [--threads 2]

Both wall-clock and CPU time are reported: on a shared, loaded machine the CPU time of the
process is the steadier of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's interp, not an installed one
warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")


def _setup(threads: int):
    from interp.stages.finetune import completion_mask, encode_rows
    from interp.models.checkpoint import ModelConfig, build_model
    from interp.worlds.toy.corpus import CorpusGenerator
    from interp.worlds.toy.templates import PAD
    from interp.worlds.toy.world import ToyWorld, load_tokenizer
    from interp.training.loop import pad_batch

    torch.set_num_threads(threads)
    world = ToyWorld()
    tok_dir = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    world.save(tok_dir)
    tokenizer = load_tokenizer(tok_dir)
    gen, rng = CorpusGenerator(world), np.random.default_rng(0)
    rows = []
    for _ in range(32):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        rows.append({"prompt": prompt, "completion": gen.number_answer(rng, seeds, n_max, sep)})
    seqs, starts = encode_rows(world, rows)
    tokens, _ = pad_batch(seqs, world.token_to_id[PAD])
    mask = completion_mask([len(s) for s in seqs], starts, tokens.shape[1])
    return (lambda: build_model(ModelConfig(), tokenizer, seed=0)), tokens, mask


def _steps(make_model, tokens, mask, deterministic: bool, n_steps: int) -> tuple[list[float], list[float], torch.Tensor]:
    """Wall-clock and CPU seconds of each step, and the final embedding."""
    from interp.training.losses import masked_lm_loss
    from interp.training.loop import deterministic_algorithms, make_optimizer

    model = make_model()
    model.train()
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-3)
    wall, cpu = [], []
    with deterministic_algorithms() if deterministic else contextlib.nullcontext():
        for _ in range(n_steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = masked_lm_loss(model(tokens), tokens, mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu, model.embed.W_E.detach().clone()


def main(argv: list[str] | None = None) -> int:
    from interp.core.io import atomic_write_json
    from interp.core.stats import mean_ci
    from interp.training.loop import make_optimizer, save_training_state

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file for the measurements")
    parser.add_argument("--rounds", type=int, default=12, help="alternating rounds of each setting (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per round; the first is not timed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: %(default)s)")
    args = parser.parse_args(argv)

    make_model, tokens, mask = _setup(args.threads)
    settings = ("default", "deterministic")
    seconds: dict[str, dict[str, list[float]]] = {clock: {k: [] for k in settings} for clock in ("wall", "cpu")}
    weights: dict[str, list[torch.Tensor]] = {k: [] for k in settings}
    for round_ in range(args.rounds):
        for name in settings if round_ % 2 == 0 else settings[::-1]:
            wall, cpu, w = _steps(make_model, tokens, mask, name == "deterministic", args.steps)
            seconds["wall"][name].append(statistics.median(wall[1:]))
            seconds["cpu"][name].append(statistics.median(cpu[1:]))
            weights[name].append(w)
        print(f"round {round_}: " + ", ".join(f"{k} {seconds['wall'][k][-1] * 1e3:.0f} ms wall / "
                                               f"{seconds['cpu'][k][-1] * 1e3:.0f} ms cpu" for k in settings), file=sys.stderr)
    ratios = {clock: [d / p for d, p in zip(v["deterministic"], v["default"])] for clock, v in seconds.items()}
    identical = {name: all(torch.equal(ws[0], w) for w in ws[1:]) for name, ws in weights.items()}

    model = make_model()
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-3)
    from interp.training.losses import masked_lm_loss

    masked_lm_loss(model(tokens), tokens, mask).backward()
    optimizer.step()  # AdamW moments exist, as in a real resume state
    save_times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            start = time.perf_counter()
            save_training_state(Path(tmp) / "state.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                         "step": 1, "loss_reference": 1.0})
            save_times.append(time.perf_counter() - start)
        state_bytes = (Path(tmp) / "state.pt").stat().st_size
    step_time = statistics.median(seconds["wall"]["deterministic"])
    save_ratio = [s / step_time for s in save_times]

    result = {
        "threads": args.threads, "rounds": args.rounds, "steps_per_round": args.steps, "batch_tokens": list(tokens.shape),
        "load_average_at_end": list(os.getloadavg()),
        "step_seconds": {clock: {k: mean_ci(v).to_dict(n_key="n_rounds") for k, v in per.items()}
                         for clock, per in seconds.items()},
        "deterministic_over_default": {clock: mean_ci(r).to_dict(n_key="n_rounds") for clock, r in ratios.items()},
        "bitwise_identical_weights_across_rounds": identical,
        "resume_state_bytes": state_bytes,
        "resume_save_over_one_step": mean_ci(save_ratio).to_dict(n_key="n_rounds"),
        "overhead_at_checkpoint_every_50": mean_ci([r / 50 for r in save_ratio]).to_dict(n_key="n_rounds"),
    }
    atomic_write_json(args.out, result)
    for clock in ("wall", "cpu"):
        r = result["deterministic_over_default"][clock]
        print(f"deterministic / default step time ({clock}): {r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"(n={r['n_rounds']} rounds, {args.threads} threads)")
    print(f"weights bitwise identical across rounds: {identical}")
    s = result["resume_save_over_one_step"]
    print(f"saving a resume state ({state_bytes / 1e6:.1f} MB) / one step (wall): {s['mean']:.2f} "
          f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
