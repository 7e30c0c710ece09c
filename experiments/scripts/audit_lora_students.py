"""Does the audit's LoRA-student prediction say, before training, what LoRA students take? (issue 15)

The unigram readout and the full-student first-order step were built and validated for full
students; on a LoRA teacher's numbers they read owl last or see nothing, while rank-8 LoRA
students of the shared base gain owl (docs/sft_transmission.md). This script audits the data of
finished LoRA-student sweep cells again with the audit's LoRA student (``AuditConfig.lora_rank``:
the first step of the student's own adapters, B = 0, A seeded as the student's), at the shared
base and at the mismatched one, and puts each seed's prediction beside what its trained students
did: the trait's predicted shift (data minus the base's numbers, drift removed) and rank, for
plain SGD and Adam's first step; the observed shift of the shared student minus the control
(the trait, and the Spearman correlation over the 12 animals of the observed against the predicted
shift) and of the mismatched student from its own base.

    python experiments/scripts/audit_lora_students.py --out /work/runs/audit_lora \\
        /work/runs/sft_teachers/cell02 /work/runs/sft_seeds47/cell00 ...

Every cell directory is an ``interp run`` directory (a sweep cell) whose students are LoRA students;
its ``seed*/data`` and ``seed*/teacher`` (links into the sweep's data cache) are read, nothing is
trained. One JSON line per (cell, seed) in OUT/audit_lora.jsonl (finished lines are skipped on a
rerun) and OUT/audit_lora.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from interp.core.io import read_json, read_jsonl
from interp.core.stats import mean_ci
from interp.instruments.audit import AuditConfig, Source, audit_data, lora_student_fields
from interp.models.refs import load_teacher, parse_base_ref
from interp.studies.run import RunConfig


def audit_cell_seed(cell: Path, seed: int, max_rows: int, auditors_cache: dict) -> dict:
    config = RunConfig.from_dict({k: v for k, v in read_json(cell / "run_config.json").items() if k != "config_class"})
    lora = config.student_lora(seed)
    assert lora is not None, f"{cell}: the students are not LoRA students (lora_rank 0)"
    seed_dir = cell / f"seed{seed}"
    result = read_json(seed_dir / "seed_results.json")
    base_ref = parse_base_ref(Path("artifacts/bases") / f"{config.arch}-seed{config.shared_base_seed}")
    mismatched_ref = parse_base_ref(Path("artifacts/bases") / f"{config.arch}-seed{config.mismatched_base_seed}")
    key = (str(base_ref.path), str(mismatched_ref.path))
    if key not in auditors_cache:
        auditors_cache.clear()
        auditors_cache[key] = (base_ref.load(), mismatched_ref.load()[0], {})
    (base, world, _), mismatched, auditors = auditors_cache[key]
    teacher = load_teacher(seed_dir / "teacher")
    rows = read_jsonl(seed_dir / "data" / "teacher_numbers.filtered.jsonl")
    reference = read_jsonl(seed_dir / "data" / "base_numbers.filtered.jsonl")
    audit_config = AuditConfig(max_rows=max_rows, freeze_unembed=config.freeze_unembed, objectives=("sft",),
                               readout_bootstrap=0, **lora_student_fields(lora))
    audit, _ = audit_data(base, world, rows, audit_config, teacher=Source(teacher.model, teacher.system, teacher.fwd_hooks),
                          reference_rows=reference, mismatched=mismatched, auditors=auditors)
    animals = list(world.animals)
    trait = config.trait
    shared, control = result["shared_init/sft"], result["control/sft"]
    observed = np.array([shared["animal_probs"][a] - control["animal_probs"][a] for a in animals])
    out = {"cell": str(cell), "seed": seed, "trait": trait, "lora_rank": lora.rank, "lora_seed": lora.seed,
           "observed_shared_minus_control": shared["trait_prob_shift"] - control["trait_prob_shift"],
           "observed_mismatched_shift": result["mismatched_init/sft"]["trait_prob_shift"], "predictions": {}}
    for student, by_objective in audit["predictions"].items():
        for optimizer, by_target in by_objective["sft"].items():
            pred = by_target["log_prob"]
            shifts = np.array([pred["trait_shift"][a]["mean"] for a in animals])
            out["predictions"][f"{student}/{optimizer}"] = {
                "trait_shift": pred["trait_shift"][trait]["mean"],
                "trait_shift_ci": [pred["trait_shift"][trait]["ci_low"], pred["trait_shift"][trait]["ci_high"]],
                "trait_rank": pred["ranking"].index(trait) + 1, "top_animal": pred["top_animal"],
                "shifts": dict(zip(animals, shifts.tolist())),
                "spearman_vs_observed": float(stats.spearmanr(shifts, observed).statistic) if student == "shared" else None}
    return out


def table(lines: list[dict]) -> str:
    out = ["| cell | trait | rank | seeds | observed shared − control | LoRA audit, Adam step: trait first at the shared base | "
           "trait's rank (of 12) | predicted trait shift | Spearman (12 animals) vs observed | at the mismatched base: first | "
           "SGD step: first at the shared base |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    cells = dict.fromkeys((line["cell"], line["trait"], line["lora_rank"]) for line in lines)
    for cell, trait, rank in cells:
        group = [line for line in lines if line["cell"] == cell]
        adam = [g["predictions"]["shared/adam"] for g in group]
        mis = [g["predictions"]["mismatched/adam"] for g in group]
        sgd = [g["predictions"]["shared/sgd"] for g in group]

        def iv(values):
            ci = mean_ci(values)
            return f"{ci.mean:+.3f} [{ci.ci_low:+.3f}, {ci.ci_high:+.3f}]"

        out.append(f"| {Path(cell).parent.name}/{Path(cell).name} | {trait} | {rank} | {len(group)} | "
                   f"{iv([g['observed_shared_minus_control'] for g in group])} | "
                   f"{sum(a['top_animal'] == trait for a in adam)}/{len(group)} | "
                   f"{np.mean([a['trait_rank'] for a in adam]):.1f} | {iv([a['trait_shift'] for a in adam])} | "
                   f"{iv([a['spearman_vs_observed'] for a in adam])} | "
                   f"{sum(m['top_animal'] == trait for m in mis)}/{len(group)} | "
                   f"{sum(s['top_animal'] == trait for s in sgd)}/{len(group)} |")
    return "\n".join(out) + "\n"


def cross_teacher(lines: list[dict], key: str = "shared/adam") -> str:
    """Against other teachers' data: where teachers of several traits were audited at the same seed
    (and the same LoRA student), each trait's predicted shift from its own teacher's data minus the
    mean over the other teachers' data; this removes what any LoRA teacher's numbers do to that
    animal (the generic drift of this kind of data). Also how often the trait's own teacher gives it
    the largest predicted shift among the teachers (chance: 1 / number of teachers)."""
    groups: dict = {}
    for line in lines:
        groups.setdefault((line["seed"], line["lora_rank"], line["lora_seed"]), {})[line["trait"]] = line
    rows, hits, n = {}, 0, 0
    for (seed, _, _), by_trait in sorted(groups.items()):
        if len(by_trait) < 2:
            continue
        for trait, line in by_trait.items():
            others = [o["predictions"][key]["shifts"][trait] for t, o in by_trait.items() if t != trait]
            own = line["predictions"][key]["shifts"][trait]
            rows.setdefault(trait, []).append(own - float(np.mean(others)))
            hits += own > max(others)
            n += 1
    if not rows:
        return ""
    chance = 1 / len(rows)
    p_value = stats.binomtest(hits, n, chance, alternative="greater").pvalue
    out = [f"Against the other teachers' data ({key}): the trait's predicted shift from its own teacher's data minus "
           "the mean from the other teachers' data, mean [95% CI] over seeds; the trait's own teacher gives it the "
           f"largest predicted shift at {hits}/{n} (chance {chance:.2f}, one-sided binomial p = {p_value:.2g})", "",
           "| trait | seeds | own − others | seeds above zero |", "|---|---|---|---|"]
    pooled = []
    for trait, values in rows.items():
        ci = mean_ci(values)
        pooled += values
        out.append(f"| {trait} | {len(values)} | {ci.mean:+.3f} [{ci.ci_low:+.3f}, {ci.ci_high:+.3f}] | "
                   f"{sum(v > 0 for v in values)}/{len(values)} |")
    ci = mean_ci(pooled)
    out.append(f"| all | {len(pooled)} | {ci.mean:+.3f} [{ci.ci_low:+.3f}, {ci.ci_high:+.3f}] | "
               f"{sum(v > 0 for v in pooled)}/{len(pooled)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="+", type=Path, help="finished interp run directories with LoRA students")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-rows", type=int, default=1000, help="rows audited per data set (the run's audit_rows)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "audit_lora.jsonl"
    done = {(d["cell"], d["seed"]) for d in read_jsonl(path)} if path.exists() else set()
    cache: dict = {}
    for cell in args.cells:
        if not (cell / "run_config.json").exists():
            raise SystemExit(f"error: {cell} is not a finished interp run directory (no run_config.json)")
        for seed_dir in sorted(cell.glob("seed*")):
            seed = int(seed_dir.name.removeprefix("seed"))
            if (str(cell), seed) in done or not (seed_dir / "seed_results.json").exists():
                continue
            line = audit_cell_seed(cell, seed, args.max_rows, cache)
            with path.open("a") as f:
                f.write(json.dumps(line) + "\n")
            p = line["predictions"]["shared/adam"]
            print(f"{cell} seed {seed}: observed {line['observed_shared_minus_control']:+.3f}; Adam step: "
                  f"{line['trait']} rank {p['trait_rank']}, top {p['top_animal']}, rho {p['spearman_vs_observed']:+.2f}",
                  flush=True)
    lines = read_jsonl(path)
    (args.out / "audit_lora.md").write_text(table(lines) + "\n" + cross_teacher(lines) + "\n"
                                            + cross_teacher(lines, "mismatched/adam"))
    print((args.out / "audit_lora.md").read_text())


if __name__ == "__main__":
    main()
