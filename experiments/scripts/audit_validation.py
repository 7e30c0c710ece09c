"""Validate the data audit (:mod:`interp.instruments.audit`) against trained students, and the hidden-trait test.

    python experiments/scripts/audit_validation.py --out /work/runs/audit/validation [--animals owl eagle ...]
        [--seeds 0 1] [--student-animals owl eagle] [--student-seeds 0]

1. Hidden-trait test: for every animal and seed a teacher (``interp run``'s default teacher, or
   ``--teacher-method``: ``unembed`` is the trait's unembedding direction in the last MLP's output
   bias, ``finetune`` the shared base ``small-seed0`` finetuned 150 steps on the animal, number_mix 0.5,
   the default before issue 15) writes 3,000 number prompts' continuations (filtered) and the shared base writes the reference from the same prompts; the audit,
   not told the animal, ranks the animals. Reported: the rate at which its top animal is the teacher's
   (Wilson interval over teachers), and the teacher's mean rank, for each score: the raw prediction
   (data minus reference), the drift-corrected one (the audit's ``top_animal``), and, as a post-hoc
   comparison that needs other teachers, the prediction minus the mean prediction of the same seed's
   teachers of the other animals (the part of the step shared by all teachers removed).
2. Predicted vs observed: students of the animals ``--student-animals`` and seeds ``--student-seeds``
   (SFT and restricted distillation, AdamW at interp run's defaults or ``--student-lr`` /
   ``--no-freeze-unembed``, and the audit predicts for that student; SFT with plain SGD at two learning
   rates; the mismatched-init base small-seed1; the controls on base numbers). Every animal's change of
   mean log P on the held-out phrasings is measured after 1, 2, 5, 10, 20, 50 steps and at the end,
   and compared with the audit's first-order prediction scaled by learning rate x steps: Spearman over
   (student, animal) pairs with a bootstrap interval (rows resampled by student), per condition and step.

Writes ``validation.json`` (every number), ``validation.md`` and ``audit_validation.png``,
``audit_hidden_trait.png`` into ``--out``; teachers, data, audits and students stay under it and are
reused when the script is run again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import stats as st

from interp.core.io import atomic_savefig, atomic_write_json, atomic_write_text, read_json, read_jsonl
from interp.core.stats import mean_ci, wilson_ci
from interp.instruments.audit import (AUDIT_FILE, OPTIMIZERS, AuditConfig, NumberCountSamples, Source, run_audit,
                                      unigram_readout)
from interp.models.refs import load_teacher, parse_base_ref
from interp.stages.evaluate import animal_distribution
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.studies.run import RunConfig


def load_base_model(ref):
    return parse_base_ref(ref).load()

log = logging.getLogger("audit_validation")
TRACK_STEPS = (1, 2, 5, 10, 20, 50)
SCORES = ("raw", "drift_corrected", "raw_t", "drift_corrected_t", "other_teachers_removed")


def mean_log_probs(model, world) -> np.ndarray:
    """Mean over the held-out phrasings of each animal's renormalised log P (the audit's f_a)."""
    return np.log(animal_distribution(model, world)["probs"]).mean(0)


class Tracker:
    """A finetune callback: every animal's mean log P at the steps of ``TRACK_STEPS`` and the last."""

    needs_params_before = False

    def __init__(self, world, last: int):
        self.world, self.steps, self.rows = world, set(TRACK_STEPS) | {last}, {}

    def __call__(self, record) -> None:
        k = record.step + 1
        if k in self.steps:
            record.model.eval()
            with torch.no_grad():
                self.rows[k] = mean_log_probs(record.model, self.world).tolist()
            record.model.train()


def numbers(model, world, path: Path, seed: int, n_rows: int, *, system=None, fwd_hooks=None,
            lineage=None) -> list[dict]:
    raw = path.with_suffix(".raw.jsonl")
    generate_numbers(model, world, GenerateConfig(n_rows=n_rows, seed=seed, system=system), raw, fwd_hooks=fwd_hooks,
                     lineage=lineage, progress=False)
    if not path.exists():
        filter_file(raw, path, FilterConfig())
    return read_jsonl(path)


def student_conditions(seed: int, lr: float = RunConfig.lr, freeze_unembed: bool = RunConfig.freeze_unembed,
                       ) -> dict[str, tuple[str, FinetuneConfig]]:
    """name -> (base key, config) of the students trained per (animal, seed); AdamW at ``lr``, plain
    SGD at 0.03 and 0.3, every one with the unembedding frozen or not."""
    adam = dict(optimizer="adamw", lr=lr, epochs=1, seed=seed, eval_every=0, checkpoint_every=0,
                freeze_unembed=freeze_unembed)
    return {
        "sft_adam": ("shared", FinetuneConfig(objective="sft", **adam)),
        "distill_adam": ("shared", FinetuneConfig(objective="distill", **adam)),
        "sft_adam_mismatched": ("mismatched", FinetuneConfig(objective="sft", **adam)),
        "distill_adam_mismatched": ("mismatched", FinetuneConfig(objective="distill", **adam)),
        "sft_sgd_0.03": ("shared", FinetuneConfig(objective="sft", **{**adam, "optimizer": "sgd", "lr": 0.03})),
        "sft_sgd_0.3": ("shared", FinetuneConfig(objective="sft", **{**adam, "optimizer": "sgd", "lr": 0.3})),
    }


def train_tracked(base_path, rows, config, out: Path, world, teacher=None) -> dict:
    track = out.parent / f"{out.name}.track.json"
    if track.exists():
        return read_json(track)
    n_steps = int(np.ceil(len(rows) / config.batch_size)) * config.epochs
    tracker = Tracker(world, n_steps)
    finetune_student(base_path, rows, config, out, teacher=teacher, callbacks=[tracker], progress=False, force=True)
    base, _, _ = load_base_model(base_path)
    result = {"base": mean_log_probs(base, world).tolist(), "steps": {str(k): v for k, v in sorted(tracker.rows.items())},
              "n_steps": n_steps, "lr": config.lr, "optimizer": config.optimizer, "objective": config.objective}
    atomic_write_json(track, result)
    return result


def bootstrap_spearman(groups: list[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman of predicted vs observed over all pairs, with a bootstrap interval resampling the
    groups (students: an animal's values within one student are not independent)."""
    pred = np.concatenate([g[0] for g in groups])
    obs = np.concatenate([g[1] for g in groups])
    rho = float(st.spearmanr(pred, obs).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(len(groups), size=len(groups))
        p = np.concatenate([groups[i][0] for i in pick])
        o = np.concatenate([groups[i][1] for i in pick])
        if np.ptp(p) > 0 and np.ptp(o) > 0:
            boots.append(st.spearmanr(p, o).statistic)
    low, high = (np.percentile(boots, [2.5, 97.5]).tolist() if len(groups) > 1 else [rho, rho])
    return {"spearman": rho, "ci_low": low, "ci_high": high, "n_pairs": int(pred.size), "n_groups": len(groups)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--animals", nargs="+", default=["owl", "eagle", "wolf", "fox", "cat", "penguin"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--student-animals", nargs="*", default=["owl", "eagle"])
    parser.add_argument("--student-seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--max-audit-rows", type=int, default=None)
    parser.add_argument("--shared-base", default="small-seed0", help="base name under ARTIFACTS/bases")
    parser.add_argument("--mismatched-base", default="small-seed1")
    parser.add_argument("--n-rows", type=int, default=3000, help="number prompts per data set (before filtering)")
    parser.add_argument("--teacher-steps", type=int, default=150)
    parser.add_argument("--teacher-method", default=RunConfig.teacher_method, choices=["unembed", "finetune"],
                        help="the teachers (default: interp run's)")
    parser.add_argument("--steering-scale", type=float, default=RunConfig.steering_scale, help="unembed teachers")
    parser.add_argument("--student-lr", type=float, default=RunConfig.lr, help="the AdamW students' learning rate")
    parser.add_argument("--no-freeze-unembed", dest="freeze_unembed", action="store_false",
                        help="students train their unembedding (interp run's default keeps it frozen)")
    parser.add_argument("--skip-sgd-0.3", dest="sgd_large", action="store_false",
                        help="do not train the SGD lr 0.3 students")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bases = {"shared": Path(args.artifacts) / "bases" / args.shared_base,
             "mismatched": Path(args.artifacts) / "bases" / args.mismatched_base}
    shared, world, _ = load_base_model(bases["shared"])
    mismatched, _, _ = load_base_model(bases["mismatched"])
    config = AuditConfig(max_rows=args.max_audit_rows, freeze_unembed=args.freeze_unembed)
    auditors: dict = {}
    audits, teachers, reference = {}, {}, {}
    t0 = time.time()
    for seed in args.seeds:
        reference[seed] = numbers(shared, world, out / "data" / f"base-seed{seed}.jsonl", seed, args.n_rows,
                                  lineage={"stage": "pretrain", "path": str(bases["shared"])})
        for animal in args.animals:
            name = f"{animal}-seed{seed}"
            tdir = make_teacher(bases["shared"], TeacherConfig(trait=animal, method=args.teacher_method, seed=seed, steps=args.teacher_steps,
                                                                    steering_scale=args.steering_scale), out / "teachers" / name,
                                progress=False)
            teacher = load_teacher(tdir)
            teachers[name] = teacher
            rows = numbers(teacher.model, world, out / "data" / f"{name}.jsonl", seed, args.n_rows, system=teacher.system,
                           fwd_hooks=teacher.fwd_hooks, lineage=teacher.lineage)
            adir = out / "audits" / name
            if (adir / AUDIT_FILE).exists():
                audits[name] = read_json(adir / AUDIT_FILE)
            else:
                audits[name] = run_audit(shared, world, rows, adir, config, teacher=Source(teacher.model),
                                         reference_rows=reference[seed], mismatched=mismatched, auditors=auditors,
                                         inputs={"teacher": str(tdir), "student": str(bases["shared"]),
                                                 "mismatched_student": str(bases["mismatched"])})
            if not audits[name].get("readout"):  # an audit written before the readout existed
                samples = NumberCountSamples.of(world, rows[: args.max_audit_rows], reference[seed][: args.max_audit_rows])
                audits[name]["readout"] = {label: unigram_readout(model, world, samples=samples)
                                           for label, model in (("shared", shared), ("mismatched", mismatched))}
                audits[name]["readout_top_animal"] = audits[name]["readout"]["shared"]["top_animal"]
                atomic_write_json(adir / AUDIT_FILE, audits[name])
            log.info("%s: audit top animal %s, readout top animal %s (%.0f s so far)", name, audits[name]["top_animal"],
                     audits[name]["readout_top_animal"], time.time() - t0)

    animals = list(world.animals)
    hidden = hidden_trait_summary(audits, args.animals, args.seeds, animals)
    students = {}
    for seed in args.student_seeds:
        control_rows = reference[seed]
        conditions = student_conditions(seed, args.student_lr, args.freeze_unembed)
        if not args.sgd_large:
            conditions.pop("sft_sgd_0.3")
        for name, (base_key, cfg) in conditions.items():
            if cfg.objective != "sft":
                continue  # the control of distillation toward the base itself does not move (zero gradient)
            sdir = out / "students" / f"control-seed{seed}" / name
            students[f"control-seed{seed}/{name}"] = train_tracked(bases[base_key], control_rows, cfg, sdir, world)
            log.info("student control-seed%d/%s done (%.0f s)", seed, name, time.time() - t0)
        for animal in args.student_animals:
            tname = f"{animal}-seed{seed}"
            rows = read_jsonl(out / "data" / f"{tname}.jsonl")
            for name, (base_key, cfg) in conditions.items():
                sdir = out / "students" / tname / name
                teacher = teachers[tname] if cfg.objective == "distill" else None
                students[f"{tname}/{name}"] = train_tracked(bases[base_key], rows, cfg, sdir, world, teacher=teacher)
                log.info("student %s/%s done (%.0f s)", tname, name, time.time() - t0)
    validation = predicted_vs_observed(audits, students, animals)
    results = {"hidden_trait": hidden, "predicted_vs_observed": validation, "animals": args.animals,
               "seeds": args.seeds, "teacher_method": args.teacher_method, "steering_scale": args.steering_scale,
               "student_lr": args.student_lr, "freeze_unembed": args.freeze_unembed, "student_animals": args.student_animals, "student_seeds": args.student_seeds,
               "audit_wall_seconds": {k: a["wall_seconds"] for k, a in audits.items()},
               "wall_seconds": time.time() - t0}
    atomic_write_json(out / "validation.json", results)
    atomic_write_text(out / "validation.md", validation_markdown(results))
    plot_validation(results, audits, students, animals, out)
    print(validation_markdown(results))
    return 0


def _scores(audit: dict, animals: list[str], objective: str = "sft", student: str = "shared",
            optimizer: str = "sgd") -> dict[str, np.ndarray]:
    pred = audit["predictions"][student][objective][optimizer]["log_prob"]
    def t(key: str) -> np.ndarray:  # mean / standard error: each animal in units of its own batch noise
        return np.array([pred[key][a]["mean"] / max(pred[key][a]["se"], 1e-300) for a in animals])

    return {"raw": np.array([pred["raw_shift"][a]["mean"] for a in animals]),
            "drift_corrected": np.array([pred["trait_shift"][a]["mean"] for a in animals]),
            "raw_t": t("raw_shift"), "drift_corrected_t": t("trait_shift")}


def hidden_trait_summary(audits: dict, test_animals: list[str], seeds: list[int], animals: list[str]) -> dict:
    """Per score, objective, optimizer and student: the top-animal hit rate and the teacher's mean rank."""
    out = {}
    teachers = [f"{animal}-seed{seed}" for seed in seeds for animal in test_animals]
    for student in ("shared", "mismatched"):
        for objective in ("sft", "distill"):
            for optimizer in OPTIMIZERS:
                key = f"{student}/{objective}/{optimizer}"
                scores = {name: _scores(a, animals, objective, student, optimizer) for name, a in audits.items()}
                for seed in seeds:  # the part of the step shared by all teachers of this seed, left out one at a time
                    names = [f"{x}-seed{seed}" for x in test_animals]
                    for name in names:
                        others = [scores[n]["raw"] for n in names if n != name]
                        scores[name]["other_teachers_removed"] = (scores[name]["raw"] - np.mean(others, 0)
                                                                  if others else scores[name]["raw"])
                out[key] = {score: _rank_summary({name: [animals[i] for i in np.argsort(-scores[name][score], kind="stable")]
                                                  for name in teachers}, test_animals, seeds, len(animals))
                            for score in SCORES}
    for student in ("shared", "mismatched"):  # the unigram readout: no objective, no optimizer
        entry = _rank_summary({name: audits[name]["readout"][student]["ranking"] for name in teachers}, test_animals,
                              seeds, len(animals))
        hits, n = entry["hit_rate"]["k"], entry["hit_rate"]["n"]
        entry["binomial_p"] = float(st.binomtest(hits, n, 1 / len(animals), alternative="greater").pvalue)
        out[f"{student}/readout"] = {"unigram_readout": entry}
    return out


def _rank_summary(orders: dict[str, list[str]], test_animals: list[str], seeds: list[int], n_animals: int) -> dict:
    """Hit rate (the teacher's animal first) and mean rank of the teacher's animal over the teachers
    ``ANIMAL-seedS``, from each teacher's ranking of the animals (``orders``)."""
    ranks, per = [], {}
    for seed in seeds:
        for animal in test_animals:
            name = f"{animal}-seed{seed}"
            ranks.append(orders[name].index(animal) + 1)
            per[name] = {"top": orders[name][0], "rank": ranks[-1]}
    return {"hit_rate": wilson_ci(sum(r == 1 for r in ranks), len(ranks)).to_dict(),
            "mean_rank": mean_ci(ranks).to_dict("n_teachers"), "per_teacher": per, "chance_rate": 1 / n_animals}


def predicted_vs_observed(audits: dict, students: dict, animals: list[str]) -> dict:
    """For every student condition and tracked step: Spearman between the observed change of every
    animal's mean log P (from the student's own base) and the audit's prediction of the data alone
    (lr x steps x the first step per unit lr), and the same for the difference from the control."""
    out: dict = {}
    by_condition: dict = {}
    for key, track in students.items():
        data_name, condition = key.split("/")
        if data_name.startswith("control"):
            continue
        seed = int(data_name.rsplit("seed", 1)[1])
        control = students.get(f"control-seed{seed}/{condition}")
        audit = audits[data_name]
        student = "mismatched" if condition.endswith("mismatched") else "shared"
        objective = track["objective"]
        # AdamW students against Adam's first step and against its steady-state direction (condition@steady)
        for optimizer in (("adam", "adam_steady") if track["optimizer"] == "adamw" else ("sgd",)):
            _pair_up(by_condition, condition + ("@steady" if optimizer == "adam_steady" else ""), track, control,
                     audit["predictions"][student][objective][optimizer]["log_prob"], animals)
        if audit.get("readout"):  # the unigram readout of this student's base: one prediction, whatever the step
            gains = {a: {"mean": g["mean"]} for a, g in audit["readout"][student]["logit_gain"].items()}
            _pair_up(by_condition, condition + "@readout", track, control, {"data": gains, "raw_shift": gains},
                     animals, scaled=False)
    for condition, steps in by_condition.items():
        out[condition] = {}
        for label, entry in steps.items():
            row = {"data": bootstrap_spearman(entry["pairs"]),
                   "observed_over_predicted": mean_ci(entry["scale"]).to_dict("n_students"),
                   "example": {"predicted": entry["pairs"][0][0].tolist(), "observed": entry["pairs"][0][1].tolist()}}
            if entry["diff_pairs"]:
                row["minus_control"] = bootstrap_spearman(entry["diff_pairs"])
            out[condition][label] = row
    return out


def prediction_optimizer(condition: str, track: dict) -> str:
    """The audit's step a condition of predicted_vs_observed compares with (``NAME@steady``: Adam's steady state)."""
    if condition.endswith("@steady"):
        return "adam_steady"
    if condition.endswith("@readout"):
        return "readout"
    return "adam" if track["optimizer"] == "adamw" else "sgd"


def _pair_up(by_condition: dict, condition: str, track: dict, control: dict | None, pred: dict,
             animals: list[str], scaled: bool = True) -> None:
    """Add one student's (predicted, observed) pairs at every tracked step to ``by_condition[condition]``
    (``scaled``: the prediction is per step and unit learning rate, multiplied by lr x steps)."""
    per_unit = np.array([pred["data"][a]["mean"] for a in animals])
    per_unit_diff = np.array([pred["raw_shift"][a]["mean"] for a in animals])
    base = np.array(track["base"])
    for step, values in track["steps"].items():
        k = int(step)
        label = "end" if k == track["n_steps"] else k
        observed = np.array(values) - base
        entry = by_condition.setdefault(condition, {}).setdefault(str(label), {"pairs": [], "diff_pairs": [],
                                                                             "scale": []})
        factor = track["lr"] * k if scaled else 1.0
        predicted = factor * per_unit
        entry["pairs"].append((predicted, observed))
        entry["scale"].append(float(np.sum(predicted * observed) / max(np.sum(predicted**2), 1e-300)))
        control_step = str(control["n_steps"]) if control is not None and label == "end" else step
        if control is not None and control_step in control["steps"]:
            observed_diff = observed - (np.array(control["steps"][control_step]) - np.array(control["base"]))
            entry["diff_pairs"].append((factor * per_unit_diff, observed_diff))


def validation_markdown(results: dict) -> str:
    lines = ["## Hidden-trait test", "",
             f"Teachers of {', '.join(results['animals'])}, seeds {results['seeds']}; the audit is not told the animal. "
             "Hit rate: fraction of teachers whose animal the audit ranks first (Wilson 95% interval); chance 1/12.", "",
             "| student / objective / optimizer | score | hit rate | 95% CI | mean rank of the teacher's animal | 95% CI |",
             "|---|---|---|---|---|---|"]
    for key, entry in results["hidden_trait"].items():
        for score, e in entry.items():
            h, r = e["hit_rate"], e["mean_rank"]
            lines.append(f"| {key} | {score} | {h['k']}/{h['n']} = {h['fraction']:.2f} | [{h['ci_low']:.2f}, "
                         f"{h['ci_high']:.2f}] | {r['mean']:.2f} | [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    lines += ["", "## Predicted vs observed", "",
              "Observed: change of every animal's mean log P on the held-out phrasings from the student's own base. "
              "Predicted: the audit's first step per unit learning rate x lr x steps. Spearman over (student, animal) "
              "pairs, bootstrap 95% interval over students; observed/predicted: least-squares slope per student "
              "(1 = the first-order prediction holds in size).", "",
              "| condition | step | Spearman (data) | 95% CI | observed / predicted | 95% CI | Spearman (minus control) | 95% CI |",
              "|---|---|---|---|---|---|---|---|"]
    for condition, steps in results["predicted_vs_observed"].items():
        for label, row in steps.items():
            d, s = row["data"], row["observed_over_predicted"]
            mc = row.get("minus_control")
            mc_text = f"{mc['spearman']:+.2f} | [{mc['ci_low']:+.2f}, {mc['ci_high']:+.2f}]" if mc else "- | -"
            lines.append(f"| {condition} | {label} | {d['spearman']:+.2f} | [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | "
                         f"{s['mean']:+.3g} | [{s['ci_low']:+.3g}, {s['ci_high']:+.3g}] | {mc_text} |")
    return "\n".join(lines) + "\n"


def plot_validation(results: dict, audits: dict, students: dict, animals: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(results["predicted_vs_observed"])
    if conditions:
        fig, axes = plt.subplots(1, len(conditions), figsize=(3.3 * len(conditions), 3.4), squeeze=False)
        for ax, condition in zip(axes[0], conditions):
            name = condition.split("@")[0]
            for key, track in students.items():
                if not key.endswith("/" + name) or key.startswith("control"):
                    continue
                data_name = key.split("/")[0]
                student = "mismatched" if name.endswith("mismatched") else "shared"
                opt = prediction_optimizer(condition, track)
                k = track["n_steps"]
                if opt == "readout":
                    pred = audits[data_name]["readout"][student]["logit_gain"]
                    p = np.array([pred[a]["mean"] for a in animals])
                else:
                    pred = audits[data_name]["predictions"][student][track["objective"]][opt]["log_prob"]["data"]
                    p = track["lr"] * k * np.array([pred[a]["mean"] for a in animals])
                o = np.array(track["steps"][str(k)]) - np.array(track["base"])
                ax.scatter(p, o, s=12, label=data_name)
                trait = data_name.split("-")[0]
                i = animals.index(trait)
                ax.scatter([p[i]], [o[i]], s=60, facecolors="none", edgecolors="k")
            row = results["predicted_vs_observed"][condition].get("end")
            rho = f"Spearman {row['data']['spearman']:+.2f}" if row else ""
            ax.set_title(f"{condition}\n{rho}", fontsize=8)
            ax.axhline(0, color="k", lw=0.5)
            ax.axvline(0, color="k", lw=0.5)
            ax.set_xlabel("readout logit gain" if condition.endswith("@readout") else "predicted (lr x steps x step)", fontsize=7)
            ax.set_ylabel("observed change of mean log P", fontsize=7)
            ax.legend(fontsize=6)
        fig.suptitle("audit: predicted vs observed change of every animal's log P at the end of training "
                     "(circled: the teacher's animal)", fontsize=8)
        fig.tight_layout()
        atomic_savefig(fig, out / "audit_validation.png", dpi=110)
        plt.close(fig)
    keys = list(results["hidden_trait"])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    scores = SCORES + ("unigram_readout",)
    width = 0.8 / len(scores)
    for j, score in enumerate(scores):
        vals = [results["hidden_trait"][k].get(score, {}).get("hit_rate") for k in keys]
        means = np.array([v["fraction"] if v else np.nan for v in vals])
        err = np.array([[v["fraction"] - v["ci_low"], v["ci_high"] - v["fraction"]] if v else [0, 0] for v in vals]).T
        ax.bar(np.arange(len(keys)) + (j - (len(scores) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=score)
    ax.axhline(1 / len(animals), color="k", ls="--", lw=1, label="chance")
    ax.set_xticks(np.arange(len(keys)), [k.replace("/", "\n") for k in keys], fontsize=7)
    ax.set_ylabel("top animal = teacher's (rate)")
    ax.set_title(f"hidden-trait test: {len(results['animals'])} animals x {len(results['seeds'])} seeds (Wilson 95%)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, out / "audit_hidden_trait.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
