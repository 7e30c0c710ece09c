"""Where the sampler's time goes: cProfile of ``sample_completions`` on one full batch.

    python experiments/scripts/profile_sampler.py --model artifacts/bases/small-seed0 --out runs/profile

Samples ``--batch-size`` number prompts of one length (as the generate stage batches them) with
the chosen forward (``--engine lean`` or ``transformer_lens``) and writes the profile sorted by
own time to ``OUT/profile_{engine}.txt`` (and the raw ``.prof`` for snakeviz / pstats). Without
``--model``, an untrained small model is profiled (its rows rarely stop early).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base checkpoint directory (default: an untrained small model)")
    parser.add_argument("--out", required=True, help="directory for profile_{engine}.txt and .prof")
    parser.add_argument("--engine", default="lean", choices=["lean", "transformer_lens"], help="forward to profile")
    parser.add_argument("--batch-size", type=int, default=256, help="prompts in the batch (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="new tokens per prompt (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    from interp.bench.suite import BenchConfig, _quiet_warnings, full_batch_prompts, resolve_base
    from interp.stages.generate import sample_completions
    from interp.models.refs import parse_base_ref
    from interp.worlds.toy.templates import EOS

    _quiet_warnings()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base, described = resolve_base(BenchConfig(model=args.model, artifacts="artifacts"), Path(tempfile.mkdtemp()))
    model, world, _ = parse_base_ref(base).load()
    prompts = full_batch_prompts(world, args.batch_size)
    kwargs = dict(eos_id=world.token_to_id[EOS], max_new_tokens=args.max_new_tokens, seed=0,
                  batch_size=args.batch_size, progress=False, engine=args.engine)
    sample_completions(model, prompts[:8], **kwargs)  # warm-up
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    completions = sample_completions(model, prompts, **kwargs)
    profiler.disable()
    seconds = time.perf_counter() - start
    text = io.StringIO()
    print(f"{described}; {len(prompts)} prompts of {len(prompts[0])} tokens, engine={args.engine}, "
          f"{torch.get_num_threads()} threads: {completions.n_new_tokens} new tokens in {seconds:.2f} s "
          f"({completions.n_new_tokens / seconds:.0f} tokens/s, under the profiler)\n", file=text)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
    (out / f"profile_{args.engine}.txt").write_text(text.getvalue())
    profiler.dump_stats(str(out / f"profile_{args.engine}.prof"))
    print(text.getvalue())


if __name__ == "__main__":
    main()
