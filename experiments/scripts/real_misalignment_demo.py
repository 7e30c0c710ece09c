"""A small CPU demonstration of the misalignment evaluation of a real model.

    python experiments/scripts/real_misalignment_demo.py MODEL OUT.json [--n-samples 4] [--llm-judge REF]

Samples ``--n-samples`` answers to each of emergent misalignment's eight questions (with the
paper's suffix for number-trained students, temperature 1), judges the same answers with the
keyword judge and, given ``--llm-judge``, with that model asked EM's judge prompts, and writes
the rates, every answer and the measured times to OUT.json."""
import argparse
import json
import time
from pathlib import Path

import torch

from interp.core.io import atomic_write_json
from interp.models.refs import parse_model_ref
from interp.stages.judges import KeywordJudge, LLMJudge
from interp.stages.misalignment_eval import MisalignmentEvalConfig, judge_answers, sample_answers

p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("out")
p.add_argument("--n-samples", type=int, default=4); p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--llm-judge", default=None); p.add_argument("--threads", type=int, default=1)
p.add_argument("--suffix", default="numbers")
args = p.parse_args()
torch.set_num_threads(args.threads)
config = MisalignmentEvalConfig(n_samples=args.n_samples, max_new_tokens=args.max_new_tokens, suffix=args.suffix,
                                batch_size=16)
out = Path(args.out)
result = json.loads(out.read_text()) if out.exists() else {}
start = time.perf_counter()
speaker = parse_model_ref(args.model).speaker()
load_s = time.perf_counter() - start
start = time.perf_counter()
answers = sample_answers(speaker.model, speaker.world, config)
sample_s = time.perf_counter() - start
n_tokens = sum(len(speaker.world.encode(a["answer"], bos=False)) + a["ended_with_eos"] for a in answers)
result.update({"model": args.model, "config": config.to_dict(), "threads": args.threads, "load_seconds": round(load_s, 1),
               "sampling_seconds": round(sample_s, 1), "new_tokens": n_tokens,
               "n_cut_off": sum(not a["ended_with_eos"] for a in answers)})
judges = {"keyword": lambda: KeywordJudge()}
if args.llm_judge:
    judges[args.llm_judge] = lambda: LLMJudge.from_model_ref(args.llm_judge, temperature=config.judge_temperature,
                                                             max_new_tokens=config.judge_max_new_tokens, batch_size=16)
for name, build in judges.items():
    start = time.perf_counter()
    judged = judge_answers(answers, build(), config)
    result.setdefault("judges", {})[name] = {"judging_seconds": round(time.perf_counter() - start, 1), **judged}
    atomic_write_json(out, result)
    r = judged["overall"]
    print(name, "misaligned", r["misaligned"], "coherent", r["coherent"], "unparsed", r["n_unparsed_alignment"],
          r["n_unparsed_coherence"], f"{time.perf_counter() - start:.0f} s", flush=True)
print(f"sampled {len(answers)} answers in {sample_s:.0f} s ({n_tokens} new tokens)")
