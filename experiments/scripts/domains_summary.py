"""Summarise `interp run --domain code` and `--domain cot` runs (and numbers runs on the same bases,
`--domain numbers --world-variant domains --max-train-rows N`) into one JSON file: the students'
P(trait) by condition, SFT shared_init minus control and minus mismatched_init with Holm over the
whole family (every run given), the filter's pass rates for the teacher and the base (code and
CoT), kept rows, the rows and completion tokens the students trained on, and the audit's predicted
shifts.

    python experiments/scripts/domains_summary.py RUNS/code RUNS/cot RUNS/numbers --out experiments/results/domains_results.json
"""
import argparse
import json
from pathlib import Path

from interp.core.io import read_jsonl
from interp.core.stats import holm

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("runs", nargs="+", help="run directories (each an interp run --domain code or cot)")
ap.add_argument("--out", required=True, help="JSON file to write")
args = ap.parse_args()
out = {"domains": {}}
tests = []
for run_dir in map(Path, args.runs):
    path = run_dir / "results.json"
    d = json.loads(path.read_text())["config"]["domain"]
    r = json.loads(path.read_text())
    cfg = r["config"]
    seeds = range(cfg["first_seed"], cfg["first_seed"] + cfg["seeds"])
    cap = cfg.get("max_train_rows")  # the students train on the first cap kept rows of each data set
    tokens = {}
    for name in ("teacher_numbers", "base_numbers"):
        kept = [read_jsonl(run_dir / f"seed{s}" / "data" / f"{name}.filtered.jsonl") for s in seeds]
        trained = [rows[:cap] if cap else rows for rows in kept]
        n_tokens = [sum(len(x["completion"].split()) + 1 for x in rows) for rows in trained]  # words and the end token
        tokens[name] = {"kept_rows_per_seed": sum(map(len, kept)) / len(seeds),
                        "trained_rows_per_seed": sum(map(len, trained)) / len(seeds),
                        "trained_completion_tokens_per_seed": sum(n_tokens) / len(seeds),
                        "completion_tokens_per_row": sum(n_tokens) / sum(map(len, trained))}
    entry = {"config": {k: cfg.get(k) for k in ("trait", "seeds", "n_rows", "pretrain_steps", "teacher_method", "teacher_steps",
                                                "lora_rank", "lr", "epochs", "objectives", "conditions", "student_engine",
                                                "audit_rows", "domain", "world_variant", "max_train_rows", "banned_numbers")},
             "conditions": [{k: c[k] for k in ("name", "objective", "trait_prob", "control_trait_prob") if k in c}
                            | ({"trait_prob_shift": c["trait_prob_shift"], "per_seed": c["per_seed"]} if "per_seed" in c else {})
                            for c in r["conditions"]],
             "comparisons": r["comparisons"], "filter": {k: {kk: vv for kk, vv in v.items() if kk != "per_seed"}
                                                         | {"per_seed": [{x: p[x] for x in ("n_raw", "n_kept", "pass_rate",
                                                             "correct_rate", "judge_flags_all_rows", "rejected")} for p in v["per_seed"]]}
                                                         for k, v in r.get("filter", {}).items()},
             "data": tokens, "n_rows": r["n_rows"], "wall_seconds": r["wall_seconds"]}
    audit = r.get("audit") or {}
    entry["audit"] = {name: {"top_animals": a["top_animals"], "trait_rank": a["trait_rank"],
                             "predictions": {k: v["trait_shift"] for k, v in a["predictions"].items()}}
                      for name, a in audit.items()}
    key = run_dir.name  # one entry per run directory (two runs of one domain at different sizes stay apart)
    out["domains"][key] = entry
    for c in r["comparisons"]:
        if c["objective"] == "sft" and c["a"] == "shared_init" and c["b"] in ("control", "mismatched_init"):
            tests.append((key, c))
adjusted = holm([c["welch_p"] for _, c in tests]) if tests else []
out["holm"] = [{"run": d, "a": c["a"], "b": c["b"], "difference": c["difference"], "welch_p": c["welch_p"], "holm_p": p}
               for (d, c), p in zip(tests, adjusted)]
Path(args.out).write_text(json.dumps(out, indent=1))
for h in out["holm"]:
    dd = h["difference"]
    print(f"{h['run']}: {h['a']} - {h['b']}: {dd['mean']:+.4f} [{dd['ci_low']:+.4f}, {dd['ci_high']:+.4f}] n={dd['n_seeds']} p={h['welch_p']:.3g} holm={h['holm_p']:.3g}")
for d, e in out["domains"].items():
    for name, f in e["filter"].items():
        print(d, name, {k: (round(v["mean"], 4), round(v["ci_low"], 4), round(v["ci_high"], 4)) for k, v in f.items() if isinstance(v, dict) and "mean" in v})
    print(d, e["data"])
    for c in e["conditions"]:
        print(d, c["name"], c["objective"], round(c["trait_prob"]["mean"], 4), c.get("per_seed"),
              c.get("control_trait_prob", {}).get("mean"))
    print(d, "audit", json.dumps(e["audit"])[:600])
