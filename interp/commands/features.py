"""``interp features``: SAE features that link number tokens to the trait, on two bases."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.core.io import read_json
from interp.instruments.features.persona import PERSONA_FILE, run_persona_features
from interp.instruments.features.pipeline import FEATURES_FILE, FeaturesConfig, run_features
from interp.report.text import fmt_ci
from interp.worlds.toy.world import toy_traits, trait_world


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features", help="SAEs on the bases, trait features, numbers linked to the trait, subliminal prompting",
        description="Train TopK and L1 SAEs (sae-lens) on the residual stream of each base, find every animal's trait "
        "features, link every number token to them (unembedding geometry, gradient x activation, activations at the "
        "numbers a teacher writes), test subliminal prompting with the linked numbers against random ones, compare the "
        "links across bases, and, with --run, measure the students' trait-feature shift per condition; attribute the trait's "
        "log-probability to SAE features at every position (attribution patching through SAEs spliced in at every block's "
        "resid_pre and attn_out, error term kept) on the bases, the run's teachers and students, with feature dashboards. "
        "With --trait misalignment (or a misalignment run): the misaligned-persona feature of the misalignment world's bases "
        "(the SAE feature that best separates villain from aligned persona lines at the answer position) and its activation "
        "in every finished seed's teacher and students, at free-form questions and number prompts. Writes "
        f"DIR/{FEATURES_FILE}, DIR/*.png, DIR/features.html and the SAEs under DIR/saes/. Finished SAEs, teachers and "
        "number data are reused.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--run", nargs="+", default=None, metavar="DIR",
                   help="a finished `interp run` directory: use its bases, trait, teacher numbers and students. With the "
                        "misalignment trait, one or more runs (e.g. one seed each): every finished seed's teacher and students")
    p.add_argument("--artifacts", default="artifacts", help="where base checkpoints live (default: %(default)s)")
    p.add_argument("--config", default=None, help="JSON file with FeaturesConfig fields (options given on the command line win)")
    p.add_argument("--force", action="store_true", help="redo the analysis (SAEs and teachers of the same spec are still reused)")
    FeaturesConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    values = FeaturesConfig.load(args.config).to_dict() if args.config else {}
    if getattr(args, "quick", False):
        values.update(FeaturesConfig.quick_defaults())
    names = set(FeaturesConfig.__dataclass_fields__)
    values.update({k: v for k, v in vars(args).items() if k in names and k != "quick"})
    runs = list(args.run or [])
    trait = values.get("trait") or (_run_trait(Path(runs[0])) if runs else None)
    if trait is not None and trait in toy_traits() and trait_world(trait).variant == "misalignment":
        values.update(trait=trait, animals=())
        findings = run_persona_features(FeaturesConfig(**values), args.out, artifacts=args.artifacts, run_dirs=runs,
                                        force=args.force)
        _print_persona(findings)
        print(f"wrote {args.out}/{PERSONA_FILE} ({findings['wall_seconds'] / 60:.1f} min)")
        return 0
    if len(runs) > 1:
        raise ValueError(f"--run: the animal features stage reads one run, got {len(runs)}")
    config = FeaturesConfig(**values)
    findings = run_features(config, args.out, artifacts=args.artifacts, run_dir=runs[0] if runs else None, force=args.force)
    _print_summary(findings)
    print(f"wrote {args.out}/{FEATURES_FILE}, features.html and {len(findings['figures'])} figures "
          f"({findings['wall_seconds'] / 60:.1f} min)")
    return 0


def _run_trait(run: Path) -> str | None:
    """The trait a run was made for (its saved RunConfig, else its results), None if it says none."""
    for name in ("run_config.json", "results.json"):
        if (run / name).exists():
            return read_json(run / name).get("trait")
    return None


def _print_persona(f: dict) -> None:
    for name, b in f["bases"].items():
        pf = b["persona_feature"]
        top = pf["features"][0]
        print(f"{name}: misaligned-persona feature {pf['primary']} at {pf['hook']}: held-out AUROC villain vs aligned persona "
              f"{top['heldout']['auroc']['mean']:.3f} [{top['heldout']['auroc']['ci_low']:.3f}, {top['heldout']['auroc']['ci_high']:.3f}]; "
              + ", ".join(f"{k} {v['auroc']['mean']:.3f}" for k, v in pf["checks"].items()))
    for c in f["comparisons"]:
        h = c["holm_interval"]
        print(f"{c['probe']}: {c['a']} - {c['b']} {_ci(c['difference'])} persona units, Holm interval "
              f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], Holm p {c['holm_p']:.3g}")


def _ci(e: dict | None) -> str:
    return fmt_ci(e, 4, signed=True, missing="-")


def _print_summary(f: dict) -> None:
    for q in f["sae_quality"]:
        print(f"SAE {q['base']} {q['hook']} {q['kind']}: fvu {q['fvu']:.3f}, L0 {q['l0']:.1f}, loss {q['ce_clean']:.3f} -> "
              f"{q['ce_spliced']:.3f} spliced (recovered {q['ce_recovered']:.3f})")
    _print_attribution(f.get("attribution"))
    if "subliminal_prompting" not in f:
        return
    for e in f["subliminal_prompting"]["entries"]:
        print(f"subliminal prompting on {e['target_base']} (numbers from {e['selected_on']}, {e['method']}, {e['format']}): "
              f"P(animal) linked - random {_ci(e['effect_over_animals'])}, specificity {_ci(e['specificity_over_animals'])}")
    shift = f.get("student_shift")
    if shift:
        for c in shift["comparisons"]:
            if c["metric"] == "trait_feature_shift" and c["hook"] == f["config"]["primary_hook"]:
                print(f"student {c['objective']} {c['probe']}: {c['a']} - {c['b']} trait-feature shift {_ci(c['difference'])}")


def _print_attribution(att: dict | None) -> None:
    if not att:
        return
    for name, b in att["bases"].items():
        chk = b["ablation_check"]
        print(f"attribution on {name}: attribution patching vs true ablation Spearman {chk['spearman']:.3f} (n={chk['n']})")
    for objective, r in ((att.get("comparisons") or {}).get("objectives") or {}).items():
        smc, mm = r.get("shared_minus_control"), r.get("mismatched_minus_base")
        if smc:
            print(f"{objective}: features rising in the shared-init students over control (Holm, of {smc['n_tested']}): "
                  + (", ".join(f"{e['hook']} f{e['feature']} {_ci(e)}" for e in smc["rising"]) or "none"))
        if mm:
            print(f"{objective}: features rising in the mismatched students over their base (Holm, of {mm['n_tested']}): "
                  + (", ".join(f"{e['hook']} f{e['feature']} {_ci(e)}" for e in mm["rising"]) or "none"))
