"""Filter pass rate of a real model's number completions under each number-prompt generator.

    python experiments/scripts/real_number_prompts.py MODEL OUT_DIR [--n-rows 64] [--max-new-tokens 64]

MODEL is a real model reference (e.g. the SmolLM2 GGUF file of ``interp fetch-model smollm2``).
For each world configuration (the paper's generator without a worked example, the default; the
paper's with one; the project's earlier grammar with one, the previous default) it samples
``--n-rows`` completions with the generate stage (temperature 1, the paper's), filters them with
the default filter and with the paper's banned list, and writes OUT_DIR/number_prompts.json:
pass rates with Wilson 95% intervals, reject reasons, banned rows and the sampling time."""
import argparse
import json
import time
from pathlib import Path

import torch

from interp.core.io import atomic_write_json, read_jsonl
from interp.core.stats import wilson_ci
from interp.models.real import load_real_base
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.worlds.hf import HFWorldConfig

CONFIGS = {"paper_0shot": HFWorldConfig(number_prompts="paper", number_shots=0),
           "paper_1shot": HFWorldConfig(number_prompts="paper", number_shots=1),
           "grammar_1shot": HFWorldConfig(number_prompts="grammar", number_shots=1)}

p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("out")
p.add_argument("--n-rows", type=int, default=64); p.add_argument("--max-new-tokens", type=int, default=64)
p.add_argument("--batch-size", type=int, default=16); p.add_argument("--threads", type=int, default=1)
p.add_argument("--only", nargs="*", default=list(CONFIGS))
args = p.parse_args()
torch.set_num_threads(args.threads)
out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
results_path = out / "number_prompts.json"
results = json.loads(results_path.read_text()) if results_path.exists() else {}
for name in args.only:
    model, world, lineage = load_real_base(args.model, CONFIGS[name])
    raw = out / f"{name}.raw.jsonl"
    config = GenerateConfig(n_rows=args.n_rows, seed=0, temperature=1.0, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)
    start = time.perf_counter()
    generate_numbers(model, world, config, raw, lineage={"model": args.model, "world": name}, progress=False)
    seconds = time.perf_counter() - start
    rows = read_jsonl(raw)
    entry = {"world_config": CONFIGS[name].to_dict(), "generate_config": config.to_dict(), "n_rows": len(rows),
             "prompt_tokens_mean": sum(len(world.encode_prompt(r["prompt"])) for r in rows) / len(rows),
             "ended_with_eos": sum(r["ended_with_eos"] for r in rows), "sampling_seconds": round(seconds, 1),
             "threads": args.threads, "examples": [r["completion"] for r in rows[:6]]}
    for filt_name, filt in (("default", FilterConfig()), ("paper_banned", FilterConfig(banned_preset="paper-misalignment"))):
        try:
            stats = filter_file(raw, out / f"{name}.{filt_name}.filtered.jsonl", filt)
        except ValueError:  # every row rejected: the statistics are written all the same
            stats = json.loads((out / f"{name}.{filt_name}.filtered.stats.json").read_text())
        ci = wilson_ci(stats["n_kept"], stats["n_raw"])
        entry[filt_name] = {"n_kept": stats["n_kept"], "pass_rate": stats["pass_rate"],
                            "pass_rate_ci95": [ci.ci_low, ci.ci_high],
                            "rejected": {k: v for k, v in stats["rejected"].items() if v},
                            "banned_hits": stats["banned_hits"]}
    results[name] = entry
    atomic_write_json(results_path, results)
    print(name, f"{entry['default']['n_kept']}/{len(rows)} pass", entry["default"]["rejected"], f"{seconds:.0f} s",
          flush=True)
