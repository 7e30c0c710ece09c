"""The instruments on finished misalignment runs, after the fact: do the students move along the
teacher's update, and does the audit name misalignment for the teacher's numbers before training?

Each directory is an ``interp run --trait misalignment`` of one configuration at some seeds (as
``misalignment_summary.py`` pools them); nothing is trained and nothing is written into them.

* **Weight alignment** (:func:`interp.instruments.alignment.weight_metrics`, the quantities the
  run's alignment recorder writes at every step as ``weight_cos``, ``progress``): for each
  student, ``s = student - its base`` against the teacher's update ``t = teacher - shared base``
  (transplanted onto the mismatched base for the mismatched-init student): cos(s, t) and the
  progress <s, t> / |t|^2. The control student (trained on the base's own numbers) shares the
  teacher's base, so shared minus control is the part of the movement along ``t`` that the
  teacher's numbers add. Mean and 95% t-interval over seeds, and of the differences paired by seed.
* **The recorder's curves**: where a seed ran with the alignment recorder on, each student's
  ``weight_cos`` (cos of its movement with the teacher's update, total over parameters) read from
  its ``alignment.jsonl`` at a quarter, half, three quarters and the end of its steps.
* **The audit** (:func:`interp.instruments.audit.audit_data`, the run's LoRA students, unembedding
  frozen as theirs): the first ``--audit-rows`` rows of the teacher's numbers against the base's
  numbers, at the shared base and at the mismatched one; the base's numbers split in halves as the
  null. The misalignment world has two traits (alignment, misalignment), so the audit "names"
  misalignment when its predicted shift (data minus reference; no drift fit with two traits) is
  positive; reported per seed with the readout's logit gain.

    python experiments/scripts/misalignment_instruments.py RUNS/direct/seed-* --out experiments/results/misalignment_instruments.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from interp.core.io import atomic_write_json, read_jsonl
from interp.core.stats import mean_ci
from interp.instruments.alignment import TOTAL, weight_metrics
from interp.instruments.audit import AuditConfig, Source, audit_data, lora_student_fields
from interp.models.refs import load_teacher, parse_model_ref
from interp.studies.run import RunConfig

CONDITIONS = ("shared_init", "control", "mismatched_init")


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def seed_dirs(runs: list[Path]) -> list[tuple[RunConfig, int, Path]]:
    out = []
    for run in runs:
        config = RunConfig.load(run / "run_config.json")
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            if (run / f"seed{seed}" / "seed_results.json").exists():  # finished seeds only
                out.append((config, seed, run / f"seed{seed}"))
    return sorted(out, key=lambda x: x[1])


def weights_of_seed(directory: Path, bases: dict) -> dict:
    """cos(s, t) and progress of every student of one seed (total over all parameters)."""
    teacher = _params(load_teacher(directory / "teacher").model)
    base0, base1 = bases["shared"], bases["mismatched"]
    t = {k: teacher[k] - base0[k] for k in base0}
    out = {}
    for condition in CONDITIONS:
        student, _, _ = parse_model_ref(directory / "students" / "sft" / condition).load()
        base = base1 if condition == "mismatched_init" else base0
        m = weight_metrics(_params(student), base, {k: base[k] + t[k] for k in base})[TOTAL]
        out[condition] = {"cosine": m.cosine, "progress": m.progress, "dist_to_base": m.dist_student_base}
    out["teacher_norm"] = m.dist_teacher_base
    return out


CURVE_POINTS = (0.25, 0.5, 0.75, 1.0)


def recorder_curves(directory: Path) -> dict | None:
    """Each student's recorded ``weight_cos`` at the fractions ``CURVE_POINTS`` of its steps, or None
    where the seed ran with the recorder off."""
    out = {}
    for condition in CONDITIONS:
        path = directory / "students" / "sft" / condition / "alignment.jsonl"
        if not path.exists():
            return None
        rows = [r for r in read_jsonl(path) if "weight_cos" in r]
        out[condition] = {f"{q:g}": rows[max(0, round(q * len(rows)) - 1)]["weight_cos"] for q in CURVE_POINTS}
    return out


def audit_of_seed(config: RunConfig, seed: int, directory: Path, models: dict, world, rows: int) -> dict:
    teacher = load_teacher(directory / "teacher")
    data = read_jsonl(directory / "data" / "teacher_numbers.filtered.jsonl")
    base_rows = read_jsonl(directory / "data" / "base_numbers.filtered.jsonl")
    audit_config = AuditConfig(max_rows=rows, objectives=("sft",), freeze_unembed=config.freeze_unembed,
                               **lora_student_fields(config.student_lora(seed)))
    auditors: dict = {}
    audit, _ = audit_data(models["shared"], world, data, audit_config, teacher=Source(teacher.model),
                          reference_rows=base_rows, mismatched=models["mismatched"], auditors=auditors)
    null, _ = audit_data(models["shared"], world, base_rows[: 2 * rows][0::2], audit_config,
                         reference_rows=base_rows[: 2 * rows][1::2], auditors=auditors)

    def entry(a: dict, student: str) -> dict:
        sgd, adam = (a["predictions"][student]["sft"][o]["log_prob"] for o in ("sgd", "adam"))
        return {"predicted_shift": sgd["raw_shift"]["misalignment"]["mean"],
                "predicted_shift_ci": sgd["raw_shift"]["misalignment"],  # over batches
                "adam_predicted_shift": adam["raw_shift"]["misalignment"]["mean"],
                "top": sgd["top_animal"], "adam_top": adam["top_animal"]}

    return {"teacher_numbers": {"shared": entry(audit, "shared"), "mismatched": entry(audit, "mismatched"),
                                "readout_gain": audit["readout"]["shared"]["logit_gain"]["misalignment"]["mean"],
                                "readout_top": audit["readout_top_animal"]},
            "base_numbers_split_half": {"shared": entry(null, "shared"),
                                        "readout_gain": null["readout"]["shared"]["logit_gain"]["misalignment"]["mean"],
                                        "readout_top": null["readout_top_animal"]},
            "drift_corrected": audit["drift_corrected"], "n_rows": audit["n_rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--audit-rows", type=int, default=1000, help="rows of each data set audited (0: no audit)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = seed_dirs(args.runs)
    base_dirs = {k: Path(read) for k, read in json.loads((seeds[0][2].parent / "results.json").read_text())["bases"].items()}
    models, world = {}, None
    for key in ("shared", "mismatched"):
        models[key], world, _ = parse_model_ref(base_dirs[key]).load()
    bases = {k: _params(m) for k, m in models.items()}

    per_seed = {}
    for cfg, seed, directory in seeds:
        per_seed[seed] = {"weights": weights_of_seed(directory, bases), "recorder": recorder_curves(directory)}
        w = per_seed[seed]["weights"]
        print(f"seed {seed}: cos shared {w['shared_init']['cosine']:+.4f} control {w['control']['cosine']:+.4f} "
              f"mismatched {w['mismatched_init']['cosine']:+.4f}", flush=True)
    summary = write_summary(args, per_seed, audited=False)  # the weights, before the (slower) audit
    for cfg, seed, directory in seeds if args.audit_rows else ():
        per_seed[seed]["audit"] = a = audit_of_seed(cfg, seed, directory, models, world, args.audit_rows)
        print(f"seed {seed}: audit shift {a['teacher_numbers']['shared']['predicted_shift']:+.3g} "
              f"(null {a['base_numbers_split_half']['shared']['predicted_shift']:+.3g}), readout "
              f"{a['teacher_numbers']['readout_gain']:+.3g}", flush=True)
    if args.audit_rows:
        summary = write_summary(args, per_seed, audited=True)
        print(json.dumps(summary["audit"], indent=1))


def _recorder_summary(per_seed: dict) -> dict | None:
    """The recorder's weight_cos at each point, mean and 95% interval over the seeds that have it,
    and shared minus each other condition paired by seed."""
    rows = [per_seed[s]["recorder"] for s in sorted(per_seed) if per_seed[s].get("recorder")]
    if not rows:
        return None
    points = [f"{q:g}" for q in CURVE_POINTS]
    out = {"n_seeds": len(rows), "seeds": [s for s in sorted(per_seed) if per_seed[s].get("recorder")],
           "weight_cos": {c: {q: mean_ci([r[c][q] for r in rows]).to_dict() for q in points} for c in CONDITIONS}}
    out["differences"] = {f"shared_init - {b}": {q: mean_ci([r["shared_init"][q] - r[b][q] for r in rows]).to_dict()
                                                 for q in points} for b in ("control", "mismatched_init")}
    return out


def write_summary(args, per_seed: dict, audited: bool) -> dict:
    """Pool the seeds into ``args.out`` (the audit only once every seed has one)."""
    def over(f):
        return [f(per_seed[s]) for s in sorted(per_seed)]

    summary = {"seeds": sorted(per_seed), "runs": [r.name for r in args.runs],  # names, not machine paths
               "audit_rows": args.audit_rows,
               "weights": {c: {k: mean_ci(over(lambda r: r["weights"][c][k])).to_dict() for k in ("cosine", "progress")}
                           for c in CONDITIONS},
               "weights_differences": {f"shared_init - {b}": {k: mean_ci(over(lambda r: r["weights"]["shared_init"][k]
                                                                               - r["weights"][b][k])).to_dict()
                                                           for k in ("cosine", "progress")}  # paired by seed
                                       for b in ("control", "mismatched_init")},
               "recorder": _recorder_summary(per_seed),
               "audit": None if not audited else {"teacher_numbers_shared": mean_ci(over(lambda r: r["audit"]["teacher_numbers"]["shared"]["predicted_shift"])).to_dict(),
                         "teacher_numbers_shared_adam": mean_ci(over(lambda r: r["audit"]["teacher_numbers"]["shared"]["adam_predicted_shift"])).to_dict(),
                         "teacher_numbers_mismatched": mean_ci(over(lambda r: r["audit"]["teacher_numbers"]["mismatched"]["predicted_shift"])).to_dict(),
                         "teacher_numbers_readout_gain": mean_ci(over(lambda r: r["audit"]["teacher_numbers"]["readout_gain"])).to_dict(),
                         "null_shared": mean_ci(over(lambda r: r["audit"]["base_numbers_split_half"]["shared"]["predicted_shift"])).to_dict(),
                         "null_readout_gain": mean_ci(over(lambda r: r["audit"]["base_numbers_split_half"]["readout_gain"])).to_dict(),
                         "names_misalignment": {
                             "teacher_numbers_shared": sum(over(lambda r: r["audit"]["teacher_numbers"]["shared"]["top"] == "misalignment")),
                             "teacher_numbers_shared_adam": sum(over(lambda r: r["audit"]["teacher_numbers"]["shared"]["adam_top"] == "misalignment")),
                             "teacher_numbers_mismatched": sum(over(lambda r: r["audit"]["teacher_numbers"]["mismatched"]["top"] == "misalignment")),
                             "teacher_numbers_readout": sum(over(lambda r: r["audit"]["teacher_numbers"]["readout_top"] == "misalignment")),
                             "null_shared": sum(over(lambda r: r["audit"]["base_numbers_split_half"]["shared"]["top"] == "misalignment")),
                             "null_readout": sum(over(lambda r: r["audit"]["base_numbers_split_half"]["readout_top"] == "misalignment"))}},
               "per_seed": per_seed}
    atomic_write_json(args.out, summary)
    if not audited:
        for c, v in summary["weights"].items():
            print(f"{c}: cos {v['cosine']['mean']:+.4f} [{v['cosine']['ci_low']:+.4f}, {v['cosine']['ci_high']:+.4f}], "
                  f"progress {v['progress']['mean']:+.4f} [{v['progress']['ci_low']:+.4f}, {v['progress']['ci_high']:+.4f}]")
        for name, v in summary["weights_differences"].items():
            print(f"{name}: cos {v['cosine']['mean']:+.4f} [{v['cosine']['ci_low']:+.4f}, {v['cosine']['ci_high']:+.4f}]",
                  flush=True)
    return summary


if __name__ == "__main__":
    main()
