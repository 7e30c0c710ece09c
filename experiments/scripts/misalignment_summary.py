"""Pool the seeds of a misalignment run made in several directories, Holm-correct its comparisons
and write every figure docs/misalignment.md cites (one JSON file).

Each directory is an ``interp run`` of one configuration at some seeds (``--seeds 1 --first-seed
S``, so that every finished seed counts even if others are still running; runs that differ only in
the fields of ``SAME_RESULTS`` pool). The comparisons are
shared_init minus control and minus mismatched_init (plus each control teacher's students, when
the run has them), Welch on the shifts from each student's own base; Holm over the family, and
Holm-consistent intervals: the comparison of rank ``r`` (smallest p first, from 0) at confidence
``1 - alpha / (m - r)``; Holm rejects a comparison when its interval and those of every comparison
ranked before it exclude zero.

    python experiments/scripts/misalignment_summary.py RUNS/direct/seed-* --out experiments/results/misalignment_direct_results.json

A run of another domain than numbers (``interp run --domain cot --trait misalignment``) also gets
its filter's figures per data set (teacher, base): pass and correct-answer rates, the shares of the
correct traces the judge and the banned numbers remove (mean and 95% interval over seeds, and
every seed's counts), the kept rows, and the audit's reading (:func:`interp.studies.audit.summarize_audits`).
"""

import argparse
import json
from pathlib import Path

import sys

from interp.core.io import atomic_write_json
from interp.core.stats import diff_ci, holm, mean_ci, welch_p, wilson_ci
from interp.studies.audit import summarize_audits
from interp.studies.run import RunConfig

sys.path.insert(0, str(Path(__file__).parent))
from pool_seeds import IGNORED  # noqa: E402

# Fields that do not change a seed's students: the alignment recorder only measures, and the packed
# engine takes the padded engine's steps to float rounding (interp bench --only speed).
SAME_RESULTS = ("record_alignment", "student_engine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    summary = summarize(args.runs, args.alpha)
    atomic_write_json(args.out, summary)
    print_summary(summary)


def summarize(runs: list[Path], alpha: float = 0.05) -> dict:
    """Every seed of ``runs`` (one configuration) pooled: conditions, comparisons with Holm."""
    per_seed, configs = {}, []
    for run in runs:
        config = RunConfig.load(run / "run_config.json")
        configs.append({**{k: v for k, v in config.to_dict().items() if k not in IGNORED + SAME_RESULTS},
                        "teacher_lora_rank": config.teacher_lora})  # None spelled as the rank it means
        if configs[-1] != configs[0]:
            raise SystemExit(f"{run} is another configuration than {runs[0]}")
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            path = run / f"seed{seed}" / "seed_results.json"
            if path.exists():  # a seed still running is left out (and named below)
                if seed in per_seed:
                    raise SystemExit(f"seed {seed} appears twice")
                per_seed[seed] = json.loads(path.read_text())
    seeds = sorted(per_seed)
    config = RunConfig.load(runs[0] / "run_config.json")
    rows = [per_seed[s] for s in seeds]
    conditions = [c for c in config.student_conditions]

    def shifts(condition):
        return [r[f"{condition}/sft"]["trait_prob_shift"] for r in rows]

    summary = {"seeds": seeds, "config": config.to_dict(), "n_rows": [r["n_rows"] for r in rows],
               "base": mean_ci([r["base"]["trait_prob"] for r in rows]).to_dict(),
               "teacher": mean_ci([r["teacher"]["trait_prob"] for r in rows]).to_dict(),
               "teacher_per_seed": [r["teacher"]["trait_prob"] for r in rows],
               "in_context": {"teacher_numbers": mean_ci([r["in_context"]["trait_prob"] for r in rows]).to_dict(),
                              "base_numbers": mean_ci([r["in_context"]["control_trait_prob"] for r in rows]).to_dict(),
                              "difference": diff_ci([r["in_context"]["trait_prob"] for r in rows],
                                                    [r["in_context"]["control_trait_prob"] for r in rows]).to_dict()},
               "conditions": {}}
    if "control_teachers" in rows[0]:
        summary["control_teachers"] = {k: mean_ci([r["control_teachers"][k]["trait_prob"] for r in rows]).to_dict()
                                       for k in rows[0]["control_teachers"]}
    for condition in conditions:
        entries = [r[f"{condition}/sft"] for r in rows]
        judged = [e["judged"] for e in entries if e.get("judged") and e["judged"].get("trait_rate")]
        summary["conditions"][condition] = {
            "trait_prob": mean_ci([e["trait_prob"] for e in entries]).to_dict(),
            "shift": mean_ci(shifts(condition)).to_dict(), "per_seed_shift": shifts(condition),
            "judged_trait_rate_pooled": wilson_ci(sum(j["trait_rate"]["k"] for j in judged),
                                                  sum(j["trait_rate"]["n"] for j in judged)).to_dict() if judged else None,
            "coherence_pooled": wilson_ci(sum(j["coherence"]["k"] for j in judged),
                                          sum(j["coherence"]["n"] for j in judged)).to_dict() if judged else None}
    others = [c for c in conditions if c != "shared_init"]
    p = [welch_p(shifts("shared_init"), shifts(b)) for b in others]
    adjusted = holm(p)
    order = sorted(range(len(p)), key=lambda i: p[i])
    comparisons = []
    for rank, i in enumerate(order):
        b = others[i]
        confidence = 1 - alpha / (len(p) - rank)
        comparisons.append({"a": "shared_init", "b": b, "difference": diff_ci(shifts("shared_init"), shifts(b)).to_dict(),
                            "holm_interval": diff_ci(shifts("shared_init"), shifts(b), confidence).to_dict(),
                            "holm_confidence": confidence, "welch_p": p[i], "holm_p": adjusted[i],
                            "per_seed": [x - y for x, y in zip(shifts("shared_init"), shifts(b))]})
    summary["comparisons"] = comparisons
    if config.domain != "numbers":
        summary["filter"] = filter_summary(rows)
        summary["audit"] = summarize_audits(rows, config.trait)
    return summary


FILTER_RATES = ("pass_rate", "correct_rate", "judge_removed_share_of_correct", "banned_number_removed_share_of_correct")


def filter_summary(rows: list[dict]) -> dict:
    """Per data set (teacher, base): each rate's mean and 95% interval over seeds, the kept rows and
    the rejected counts per seed."""
    out = {}
    for name in rows[0]["filter"]:
        stats = [r["filter"][name] for r in rows]
        out[name] = {**{k: mean_ci([s[k] for s in stats]).to_dict() for k in FILTER_RATES if all(k in s for s in stats)},
                     "n_kept": mean_ci([s["n_kept"] for s in stats]).to_dict(),
                     "per_seed": [{k: s[k] for k in ("n_raw", "n_kept", "n_correct", "judge_flags_all_rows", "rejected")}
                                  for s in stats]}
    return out


def print_summary(summary: dict) -> None:
    seeds = summary["seeds"]
    print(f"{len(seeds)} seeds {seeds}; base {summary['base']['mean']:.4f}, teacher {summary['teacher']['mean']:.4f}")
    for c, v in summary["conditions"].items():
        print(f"{c}: P {v['trait_prob']['mean']:.4f}, shift {v['shift']['mean']:+.4f} "
              f"[{v['shift']['ci_low']:+.4f}, {v['shift']['ci_high']:+.4f}]")
    for c in summary["comparisons"]:
        d, h = c["difference"], c["holm_interval"]
        print(f"shared_init - {c['b']}: {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]; Holm interval "
              f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p {c['welch_p']:.3g}, Holm p {c['holm_p']:.3g}")
    ic = summary["in_context"]
    print(f"in-context: teacher numbers {ic['teacher_numbers']['mean']:.4f} vs base numbers {ic['base_numbers']['mean']:.4f}")
    for name, f in summary.get("filter", {}).items():
        print(name, {k: f"{v['mean']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]" for k, v in f.items() if k != "per_seed"})
        print(name, "per seed", f["per_seed"])
    for name, a in summary.get("audit", {}).items():
        print("audit", name, a["top_animals"], {k: round(v["trait_shift"]["mean"], 5) for k, v in a["predictions"].items()})


if __name__ == "__main__":
    main()
