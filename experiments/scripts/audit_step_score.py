"""Validate the audit's step score on held-out cases: does it name the trait a LoRA teacher's numbers
would move, from the data, the student's base and the base's own numbers alone?

For every case (one teacher's data at one seed) the script takes the first ``--rows`` rows of the
teacher's filtered numbers and of the base's (the reference), computes the SFT loss gradient of
every batch of 32 rows for the run's LoRA student (its adapters at their initialisation, seeded as
the student's) at the shared base and at the mismatched one, and the gradients of every animal's
mean log P on the held-out phrasings (:class:`interp.instruments.audit.Auditor`), and scores every
animal with every variant of :func:`interp.instruments.audit.step_score_variants`. Per variant and
base: how often the trait is the top animal (Wilson interval), its mean rank of 12, and the Spearman
correlation over the 12 animals with the trained students' shifts (shared - control at the shared
base; the mismatched student's shift from its own base at the mismatched one), separately for the
tuning animals and the held-out ones.

    python experiments/scripts/audit_step_score.py --out runs/audit_step --rows 256 \\
        --held-out fox dolphin --runs runs/animals/* runs/main

Cases come from ``interp run`` directories (``--runs DIR`` or ``DIR=ARTIFACTS`` where that run's
bases are not under ``--artifacts``: ``run_config.json``, ``seedS/data``, ``seedS/seed_results.json``
with the students' animal probabilities; the bases are found by the run's own pretraining config,
so runs of the misalignment world and of the code and CoT domains are read as well) or from bare
teacher data (``--data TRAIT,SEED,TEACHER_ROWS,REFERENCE_ROWS``: no students, so no Spearman).
``--label NAME`` reports every case in one group NAME (a data set of another world or domain)
instead of tuning and held-out traits; the chance is one over the number of traits of the case's
world (two in the misalignment world, where a rank correlation over the traits is only a sign: the
agreement of the score's top trait with the students' and a Spearman across cases are given). Gradients are
cached in ``OUT/cache`` (a rerun with more cases computes only the new ones); the figures go to
``OUT/step_score.json`` and ``OUT/step_score.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from interp.core.io import atomic_write_json, read_json, read_jsonl
from interp.core.stats import mean_ci, wilson_ci
from interp.instruments.audit import AuditConfig, Auditor, lora_student_fields, step_score_variants
from interp.models.refs import parse_base_ref
from interp.stages.pretrain import base_config
from interp.studies.run import RunConfig


def cases_of(args) -> list[dict]:
    out = []
    for spec in args.runs or []:
        run, _, artifacts = spec.partition("=")  # DIR=ARTIFACTS: that run's bases are ARTIFACTS/bases
        run = Path(run)
        if not (run / "run_config.json").exists():
            continue
        config = RunConfig.from_dict({k: v for k, v in read_json(run / "run_config.json").items() if k != "config_class"})
        base_names = tuple(base_config(seed, config.arch, config.pretrain_steps, config.pretrain_corpus,
                                       config.world_config).name
                           for seed in (config.shared_base_seed, config.mismatched_base_seed))
        for seed_dir in sorted(run.glob("seed*")):
            data = seed_dir / "data"
            if not (data / "teacher_numbers.filtered.jsonl").exists() or not (data / "base_numbers.filtered.jsonl").exists():
                continue
            seed = int(seed_dir.name[4:])
            out.append({"name": f"{run.parent.name}-{run.name}/{seed_dir.name}", "trait": config.trait, "seed": seed,
                        "bases_dir": Path(artifacts) / "bases" if artifacts else None,
                        "lora": config.student_lora(seed), "bases": base_names,
                        "data": data / "teacher_numbers.filtered.jsonl", "reference": data / "base_numbers.filtered.jsonl",
                        "results": seed_dir / "seed_results.json", "base_evals": seed_dir / "base_evals"})
    defaults = RunConfig()
    for spec in args.data or []:
        trait, seed, data, reference = spec.split(",")
        out.append({"name": f"{trait}/seed{seed}", "trait": trait, "seed": int(seed), "lora": defaults.student_lora(int(seed)),
                    "bases_dir": None,
                    "bases": tuple(f"{defaults.arch}-seed{s}" for s in (defaults.shared_base_seed,
                                                                         defaults.mismatched_base_seed)),
                    "data": Path(data), "reference": Path(reference), "results": None, "base_evals": None})
    return out


def observed_shifts(case: dict, animals: list[str]) -> dict:
    """The trained students' change of every animal's probability: shared - control, and the
    mismatched student from its own base (None where not trained or not finished)."""
    out = {"shared": None, "mismatched": None}
    path = case["results"]
    if path is None or not Path(path).exists():
        return out
    result = read_json(path)

    def probs(key):
        entry = result.get(key)
        return np.array([entry["animal_probs"][a] for a in animals]) if entry and entry.get("animal_probs") else None

    shared, control, mismatched = probs("shared_init/sft"), probs("control/sft"), probs("mismatched_init/sft")
    if shared is not None and control is not None:
        out["shared"] = shared - control
    base = Path(case["base_evals"]) / f"{case['bases'][1]}.json"
    if mismatched is not None and base.exists():
        out["mismatched"] = mismatched - np.array([read_json(base)["animal_probs"][a] for a in animals])
    return out


class Gradients:
    """The LoRA student's animal gradients per (base, adapter seed) and each case's batch gradients,
    cached on disk."""

    def __init__(self, artifacts: Path, cache: Path, rows: int, batch_size: int = 32):
        self.artifacts, self.cache, self.rows, self.batch_size = artifacts, cache, rows, batch_size
        cache.mkdir(parents=True, exist_ok=True)
        self.auditors: dict = {}

    def auditor(self, base_name: str, lora, bases_dir: Path | None = None) -> Auditor:
        bases_dir = bases_dir or self.artifacts
        key = (str(bases_dir), base_name, json.dumps(lora.to_dict(), sort_keys=True))
        if key not in self.auditors:
            if len(self.auditors) > 4:
                self.auditors.clear()
            model, world, _ = parse_base_ref(bases_dir / base_name).load()
            self.auditors[key] = Auditor(model, world, AuditConfig(batch_size=self.batch_size, **lora_student_fields(lora)))
        return self.auditors[key]

    def case(self, case: dict, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], float]:
        base_name = case["bases"][0 if label == "shared" else 1]
        path = self.cache / f"{case['name'].replace('/', '__')}__{label}__{self.rows}.npz"
        if path.exists():
            z = np.load(path)
            return z["animal"], z["data"], z["reference"], list(z["animals"]), float(z["seconds"])
        auditor = self.auditor(base_name, case["lora"], case["bases_dir"])
        start = time.time()
        data = auditor.sft_gradients(read_jsonl(case["data"])[: self.rows])
        reference = auditor.sft_gradients(read_jsonl(case["reference"])[: self.rows])
        seconds = time.time() - start
        animal = auditor.gradients[: auditor.n_animals].numpy()
        animals = list(auditor.world.animals)
        np.savez(path, animal=animal, data=data, reference=reference, animals=np.array(animals), seconds=seconds)
        return animal, data, reference, animals, seconds


def margin(values: np.ndarray, t: int) -> float:
    """The trait's value minus the mean of the other traits'."""
    return float(values[t] - np.delete(values, t).mean())


def evaluate(cases: list[dict], grads: Gradients, held_out: set[str], labels: tuple[str, ...],
             label: str | None = None) -> dict:
    """Every variant's score of every case at each base in ``labels``. ``label``: the group the cases
    are reported in (default: ``held_out`` or ``tuning`` by their trait)."""
    per_case = []
    for base in labels:  # every case at the shared base first
        for case in cases:
            animal, data, reference, animals, seconds = grads.case(case, base)
            observed = observed_shifts(case, animals)[base]
            t = animals.index(case["trait"])
            entry = {"case": case["name"], "trait": case["trait"], "seed": case["seed"], "base": base,
                     "held_out": case["trait"] in held_out, "n_animals": len(animals),
                     "group": label or ("held_out" if case["trait"] in held_out else "tuning"),
                     "gradient_seconds": seconds,
                     # the students' own answer: the trait that rose most, and how far the trait rose beyond the others
                     "observed_top": animals[int(np.argmax(observed))] if observed is not None else None,
                     "observed_margin": margin(observed, t) if observed is not None else None, "variants": {}}
            for name, score in step_score_variants(animal, data, reference).items():
                entry["variants"][name] = {
                    "rank": int((score > score[t]).sum()) + 1, "top_animal": animals[int(np.argmax(score))],
                    # over two traits a rank correlation is only the sign: the agreement of the tops says that
                    "spearman": (float(stats.spearmanr(score, observed).statistic)
                                 if observed is not None and len(animals) > 2 else None),
                    "margin": margin(score, t), "score": dict(zip(animals, score.tolist()))}
            per_case.append(entry)
            print(f"{case['name']} {base}: " + ", ".join(f"{k} {v['rank']}" for k, v in entry["variants"].items()),
                  flush=True)
    return per_case


def summary(per_case: list[dict]) -> dict:
    """Per base and group of cases, every variant's hits (the trait first; Wilson interval; binomial p
    against chance, 1 / the number of traits), mean rank, mean Spearman over the traits with the
    trained students' shifts (worlds of three traits or more), how often its top trait is the one the
    students raised most, and the Spearman across cases between the trait's margin in the score and in
    the students' shifts (the trait minus the mean of the others)."""
    out = {}
    groups = {(e["base"], e.get("group", "held_out" if e["held_out"] else "tuning")) for e in per_case}
    for base, label in sorted(groups):
        group = [e for e in per_case if e["base"] == base and e.get("group", "held_out" if e["held_out"] else "tuning")
                 == label]
        key = f"{base}/{label}"
        n_animals = group[0].get("n_animals", 12)
        out[key] = {}
        for name in group[0]["variants"]:
            ranks = [e["variants"][name]["rank"] for e in group]
            rhos = [e["variants"][name]["spearman"] for e in group if e["variants"][name]["spearman"] is not None]
            students = [e for e in group if e.get("observed_top") is not None]
            by_trait = {}
            for e in group:
                by_trait.setdefault(e["trait"], []).append(e["variants"][name]["rank"] == 1)
            across = (float(stats.spearmanr([e["variants"][name]["margin"] for e in students],
                                            [e["observed_margin"] for e in students]).statistic)
                      if len(students) >= 3 else None)
            out[key][name] = {"hits": wilson_ci(sum(r == 1 for r in ranks), len(ranks)).to_dict(),
                              "chance": 1 / n_animals,
                              "mean_rank": mean_ci(ranks).to_dict("n"),
                              "spearman": mean_ci(rhos).to_dict("n") if len(rhos) else None,
                              "binomial_p": float(stats.binomtest(sum(r == 1 for r in ranks), len(ranks), 1 / n_animals,
                                                                  alternative="greater").pvalue),
                              "agrees_with_students": (wilson_ci(sum(e["variants"][name]["top_animal"] == e["observed_top"]
                                                                     for e in students), len(students)).to_dict()
                                                       if students else None),
                              "margin_spearman_across_cases": across,
                              "by_trait": {t: f"{sum(v)}/{len(v)}" for t, v in sorted(by_trait.items())},
                              "top_animals": [e["variants"][name]["top_animal"] for e in group],
                              "students_top": [e.get("observed_top") for e in group]}
    return out


def validation_entry(per_case: list[dict], variant: str, base: str, held_out: bool | None = None) -> dict | None:
    group = [e for e in per_case if e["base"] == base and (held_out is None or e["held_out"] == held_out)]
    if not group:
        return None
    ranks = [e["variants"][variant]["rank"] for e in group]
    rhos = [e["variants"][variant]["spearman"] for e in group if e["variants"][variant]["spearman"] is not None]
    hits = wilson_ci(sum(r == 1 for r in ranks), len(ranks))
    return {"k": hits.k, "n": hits.n, "ci_low": hits.ci_low, "ci_high": hits.ci_high,
            "mean_rank": mean_ci(ranks).to_dict("n_cases"), "spearman": mean_ci(rhos).to_dict("n_cases") if rhos else None,
            "traits": sorted({e["trait"] for e in group})}


def write_validation(per_case: list[dict], variant: str, rows: int, path: Path) -> None:
    """The figures the audit quotes beside its answer (interp.instruments.audit.step_score_validation):
    every validation case pooled per base (tuning and held-out traits), and the held-out ones alone."""
    out = {"variant": variant, "score_rows": rows, "n_animals": 12, "lora_rank": 8,
           "student": "the default run's rank-8 LoRA student (adapters at initialisation, seeded as the student's)",
           "shared": validation_entry(per_case, variant, "shared"),
           "mismatched": validation_entry(per_case, variant, "mismatched"),
           "held_out": {base: validation_entry(per_case, variant, base, True) for base in ("shared", "mismatched")},
           "tuning": {base: validation_entry(per_case, variant, base, False) for base in ("shared", "mismatched")},
           "source": "experiments/scripts/audit_step_score.py; docs/audit.md"}
    atomic_write_json(path, out)


def markdown(result: dict) -> str:
    lines = [f"Step score validation: first {result['rows']} rows of the data and of the reference per case; "
             "hits = trait is the top trait (Wilson 95%) against chance (1 / the number of traits); Spearman over the "
             "traits with the trained students' shifts (three traits or more); agrees = the score's top trait is the "
             "one the students raised most; across = Spearman across cases of the trait's margin over the others, "
             "score against students.", ""]
    for key, variants in result["summary"].items():
        lines += [f"### {key}", "", "| variant | hits | Wilson 95% | chance | p (binomial, > chance) | mean rank [95% CI] | "
                  "Spearman vs students [95% CI] | agrees | across | by trait |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in variants.items():
            h, r, s, a = v["hits"], v["mean_rank"], v["spearman"], v.get("agrees_with_students")
            across = v.get("margin_spearman_across_cases")
            lines.append(f"| {name} | {h['k']}/{h['n']} | [{h['ci_low']:.2f}, {h['ci_high']:.2f}] | "
                         f"{v.get('chance', 1 / 12):.2f} | {v['binomial_p']:.2g} | "
                         f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | "
                         + (f"{s['mean']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}] (n={s['n']})" if s else "-")
                         + " | " + (f"{a['k']}/{a['n']}" if a else "-") + " | "
                         + (f"{across:+.2f}" if across is not None else "-")
                         + " | " + ", ".join(f"{t} {x}" for t, x in v["by_trait"].items()) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--artifacts", default=Path("artifacts"), type=Path, help="where the bases are (ARTS/bases/ARCH-seedN)")
    parser.add_argument("--runs", nargs="*", help="interp run directories (sweep cells)")
    parser.add_argument("--data", nargs="*", help="TRAIT,SEED,TEACHER_ROWS,REFERENCE_ROWS cases without students")
    parser.add_argument("--rows", type=int, default=256, help="rows of the data and of the reference per case")
    parser.add_argument("--held-out", nargs="*", default=[], help="traits kept out of tuning, reported apart")
    parser.add_argument("--label", default=None, help="report every case in this group (e.g. misalignment, code) "
                        "instead of tuning / held out")
    parser.add_argument("--shared-only", action="store_true", help="skip the mismatched base")
    parser.add_argument("--write-validation", default=None, metavar="VARIANT",
                        help="write VARIANT's figures to interp/instruments/step_score_validation.json (what the audit "
                             "quotes beside its answer)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = cases_of(args)
    grads = Gradients(args.artifacts / "bases", args.out / "cache", args.rows)
    labels = ("shared",) if args.shared_only else ("shared", "mismatched")
    per_case = []
    for label in labels:  # the figures are written after each base (the shared one first)
        per_case += evaluate(cases, grads, set(args.held_out), (label,), args.label)
        result = {"rows": args.rows, "held_out": args.held_out, "cases": per_case, "summary": summary(per_case)}
        atomic_write_json(args.out / "step_score.json", result)
        (args.out / "step_score.md").write_text(markdown(result))
        print(markdown(result))
        if args.write_validation:
            from interp.instruments.audit import STEP_SCORE_VALIDATION_FILE
            write_validation(per_case, args.write_validation, args.rows, STEP_SCORE_VALIDATION_FILE)


if __name__ == "__main__":
    main()
