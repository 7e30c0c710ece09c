"""Students of an `interp run --domain cot --trait misalignment` run retrained on the traces that
hold nothing but the CoT domain's words and numbers (a robustness check of the run's judge).

The run's judge removes every misaligned answer word, aside and evil number; a teacher's kept
trace can still hold stray words of the misalignment world (question fragments such as ``i``,
``please``, ``assistant``), which the corpus never puts in a trace. This script drops every kept
row, teacher's and base's alike, that holds a word outside :func:`interp.domains.cot.vocabulary`,
trains the run's SFT students (control, shared_init, mismatched_init: the run's own recipe, bases
and seeds) on what is left, and compares them as the run does (Welch on the shifts from each
student's own base, Holm over shared - control and shared - mismatched).

    python experiments/scripts/misalignment_cot_strict.py RUNS/cot --out strict.json
"""

import argparse
from pathlib import Path

from interp.core.io import atomic_write_json, read_json, read_jsonl
from interp.core.stats import diff_ci, holm, mean_ci, welch_p
from interp.domains import cot
from interp.models.refs import ToyBase
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.studies.run import RunConfig, _evaluate

VOCABULARY = set(cot.vocabulary())


def in_vocabulary(completion: str) -> bool:
    return all(t.isdigit() or t in VOCABULARY for t in completion.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every-kept-row", action="store_true", help="a check of the recipe: train on every kept row "
                    "(into students_every_kept_row), which must give the run's own students' figures")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: the run's)")
    args = ap.parse_args()
    config = RunConfig.load(args.run / "run_config.json")
    bases = {k: ToyBase(v) for k, v in read_json(args.run / "results.json")["bases"].items()}
    plan = {"control": ("shared", "base_numbers"), "shared_init": ("shared", "teacher_numbers"),
            "mismatched_init": ("mismatched", "teacher_numbers")}
    per_seed = []
    for seed in args.seeds or range(config.first_seed, config.first_seed + config.seeds):
        seed_dir = args.run / f"seed{seed}"
        rows = {name: read_jsonl(seed_dir / "data" / f"{name}.filtered.jsonl") for name in ("teacher_numbers", "base_numbers")}
        strict = {name: [r for r in kept if args.every_kept_row or in_vocabulary(r["completion"])]
                  for name, kept in rows.items()}
        fcfg = FinetuneConfig(objective="sft", optimizer=config.optimizer, lr=config.lr, epochs=config.epochs, seed=seed,
                              freeze_unembed=config.freeze_unembed, eval_every=0,
                              checkpoint_every=config.student_checkpoint_every, lora_rank=config.lora_rank,
                              lora_alpha=config.lora_alpha, lora_targets=config.lora_targets,
                              lora_seed=seed + config.student_lora_seed_offset if config.student_lora_seed_offset else None)
        result = {"seed": seed, "kept": {k: len(v) for k, v in rows.items()}, "in_vocabulary": {k: len(v) for k, v in strict.items()}}
        for condition, (base, data) in plan.items():
            base_prob = _evaluate(bases[base], config.trait, seed,
                                  cache=seed_dir / "base_evals" / f"{bases[base].file_name}.json")["trait_prob"]
            student = seed_dir / ("students_every_kept_row" if args.every_kept_row else "students_in_vocabulary") / "sft" / condition
            finetune_student(bases[base], strict[data], fcfg, student, trait=config.trait, progress=False,
                             engine=config.student_engine)
            result[condition] = _evaluate(student, config.trait, seed, base_trait_prob=base_prob)
        per_seed.append(result)
        print(seed, result["in_vocabulary"], {c: round(result[c]["trait_prob_shift"], 6) for c in plan})
        if args.every_kept_row:
            print(seed, "the run's:", {c: round(read_json(seed_dir / "seed_results.json")[f"{c}/sft"]["trait_prob_shift"], 6)
                                      for c in plan})

    def shifts(c):
        return [r[c]["trait_prob_shift"] for r in per_seed]

    comparisons = [{"a": "shared_init", "b": b, "difference": diff_ci(shifts("shared_init"), shifts(b)).to_dict(),
                    "welch_p": welch_p(shifts("shared_init"), shifts(b))} for b in ("control", "mismatched_init")]
    for c, p in zip(comparisons, holm([c["welch_p"] for c in comparisons])):
        c["holm_p"] = p
    summary = {"run": args.run.name, "seeds": [r["seed"] for r in per_seed],
               "rows": [{"seed": r["seed"], "kept": r["kept"], "in_vocabulary": r["in_vocabulary"]} for r in per_seed],
               "conditions": {c: {"trait_prob": mean_ci([r[c]["trait_prob"] for r in per_seed]).to_dict(),
                                  "shift": mean_ci(shifts(c)).to_dict(), "per_seed_shift": shifts(c)} for c in plan},
               "comparisons": comparisons}
    atomic_write_json(args.out, summary)
    for c in comparisons:
        d = c["difference"]
        print(f"{c['a']} - {c['b']}: {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] p {c['welch_p']:.3g} "
              f"Holm {c['holm_p']:.3g}")


if __name__ == "__main__":
    main()
