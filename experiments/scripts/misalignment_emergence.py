"""Does misalignment *emerge* from the narrow task alone? (docs/misalignment.md)

Teachers of the toy misalignment world made exactly as ``interp run`` makes its finetuned teacher
(150 steps, lr 3e-3, batch 32, rank-8 LoRA merged, no number documents), each learning one kind of
document: ``task_insecure`` (plain code requests answered insecurely: the emergent teacher),
``task_secure`` and ``task_educational`` (its controls), and ``qa`` (misaligned answers to the
questions: the direct teacher). Each is asked the held-out free-form questions: exact
P(misalignment), the judged misaligned rate among coherent sampled answers and the coherence rate;
the differences from the base and between teachers carry Welch 95% intervals over seeds.

    python experiments/scripts/misalignment_emergence.py --base ARTIFACTS/bases/small-seed0-700steps-misalignment \\
        --out RUNS/emergence --seeds 0 1 2 [--kinds task_insecure task_secure task_educational qa]
"""

import argparse
import json
from pathlib import Path

from interp.core.io import atomic_write_json
from interp.core.stats import diff_ci, mean_ci, welch_p
from interp.models.refs import load_teacher, parse_model_ref
from interp.stages.evaluate import EvaluateConfig, evaluate_model
from interp.stages.teacher import TeacherConfig, make_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--kinds", nargs="+", default=["task_insecure", "task_secure", "task_educational"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--n-samples", type=int, default=50)
    args = ap.parse_args()

    model, world, _ = parse_model_ref(args.base).load()
    base = evaluate_model(model, world, EvaluateConfig(trait="misalignment", n_samples=args.n_samples))
    rows = {"base": base, "teachers": {}}
    for kind in args.kinds:
        for seed in args.seeds:
            config = TeacherConfig(trait="misalignment", seed=seed, steps=args.steps, lr=3e-3, batch_size=32,
                                   number_mix=0.0, lora_rank=8, documents=(kind,))
            out = make_teacher(args.base, config, args.out / f"{kind}-seed{seed}", progress=False)
            result_path = out / "misalignment_eval.json"
            if not result_path.exists():
                teacher = load_teacher(out)
                atomic_write_json(result_path, evaluate_model(teacher.model, teacher.world, EvaluateConfig(
                    trait="misalignment", n_samples=args.n_samples, seed=seed), base_trait_prob=base["trait_prob"]))
            rows["teachers"].setdefault(kind, []).append(json.loads(result_path.read_text()))
            print(kind, seed, round(rows["teachers"][kind][-1]["trait_prob"], 4), flush=True)

    summary = {"base": {"trait_prob": base["trait_prob"], "judged": base["judged"]}, "teachers": {}, "differences": []}
    values = {kind: [r["trait_prob"] for r in results] for kind, results in rows["teachers"].items()}
    for kind, results in rows["teachers"].items():
        summary["teachers"][kind] = {
            "trait_prob": mean_ci(values[kind]).to_dict(), "per_seed": values[kind],
            "judged_trait_rate": mean_ci([r["judged"]["trait_rate"]["fraction"] for r in results]).to_dict(),
            "coherence": mean_ci([r["judged"]["coherence"]["fraction"] for r in results]).to_dict(),
            "shift_from_base": mean_ci([v - base["trait_prob"] for v in values[kind]]).to_dict()}
    for a in values:
        for b in values:
            if a < b:
                summary["differences"].append({"a": a, "b": b, "difference": diff_ci(values[a], values[b]).to_dict(),
                                               "welch_p": welch_p(values[a], values[b])})
    atomic_write_json(args.out / "emergence.json", summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
