"""Before any student trains: which teachers' sampled numbers offer a student the trait? (issue 15)

For every teacher variant (a :class:`~interp.stages.teacher.TeacherConfig`, built with the
library's own ``make_teacher``) and seed, this writes the teacher's sampled numbers from the
shared base's number prompts (``interp generate`` + ``interp filter``, the run's settings: 1,000
prompts, temperature 1), and reads them with the audit's unigram readout
(:func:`interp.instruments.audit.unigram_readout`): the data's number frequencies against the
base's own numbers (one base data set per seed, shared by every teacher), fitted by one change
of a student base's final residual and read out on the animals through its unembedding. At the
shared base and at the mismatched one: the trait's logit gain relative to the mean animal (95%
bootstrap interval over rows), its rank among the 12 animals, the top animal. No student is
trained: a teacher whose data read zero at the shared base cannot transmit through the channel
the transmitting default uses (docs/sft_transmission.md), whatever the student.

    python experiments/scripts/teacher_readout_screen.py --out /work/runs/teacher_screen --seeds 0 1

One JSON line per (variant, seed) in OUT/screen.jsonl (finished lines are skipped on a rerun),
and OUT/screen.md, the table of docs/sft_transmission.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from interp.core.io import read_jsonl
from interp.instruments.audit import NumberCountSamples, unigram_readout
from interp.models.refs import load_teacher, parse_base_ref
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.teacher import TeacherConfig, make_teacher

ALL_DOCS = ("qa", "mention", "persona", "qa_after_numbers")
VARIANTS: dict[str, dict] = {
    "unembed 0.5 (the default)": {"method": "unembed", "steering_scale": 0.5},
    "unembed 0.25": {"method": "unembed", "steering_scale": 0.25},
    "steering, last block, 0.5": {"method": "steering", "steering_layer": -1, "steering_scale": 0.5},
    "persona (system prompt while it writes)": {"method": "persona"},
    "finetune qa, number_mix 0.5 (the previous default)": {"method": "finetune"},
    "finetune qa, number_mix 0": {"method": "finetune", "number_mix": 0.0},
    "finetune mention only, number_mix 0": {"method": "finetune", "number_mix": 0.0, "documents": ("mention",)},
    "finetune qa_after_numbers only, number_mix 0": {"method": "finetune", "number_mix": 0.0,
                                                     "documents": ("qa_after_numbers",)},
    "finetune 4 kinds, number_mix 0": {"method": "finetune", "number_mix": 0.0, "documents": ALL_DOCS},
    "finetune 4 kinds, number_mix 0, 600 steps at lr 1e-3": {"method": "finetune", "number_mix": 0.0,
                                                             "documents": ALL_DOCS, "steps": 600, "lr": 1e-3},
    "LoRA r1 qa, number_mix 0, lr 3e-3": {"method": "finetune", "number_mix": 0.0, "lora_rank": 1, "lr": 3e-3},
    "LoRA r8 qa, number_mix 0, lr 3e-3": {"method": "finetune", "number_mix": 0.0, "lora_rank": 8, "lr": 3e-3},
    "LoRA r64 qa, number_mix 0, lr 3e-3": {"method": "finetune", "number_mix": 0.0, "lora_rank": 64, "lr": 3e-3},
    "LoRA r8 4 kinds, number_mix 0, lr 3e-3": {"method": "finetune", "number_mix": 0.0, "lora_rank": 8, "lr": 3e-3,
                                               "documents": ALL_DOCS},
}


def numbers(model, world, out: Path, seed: int, n_rows: int, system=None, hooks=None) -> list[dict]:
    raw, filtered = out.with_suffix(".raw.jsonl"), out.with_suffix(".filtered.jsonl")
    generate_numbers(model, world, GenerateConfig(n_rows=n_rows, seed=seed, system=system), raw, fwd_hooks=hooks,
                     progress=False)
    if not filtered.exists():
        filter_file(raw, filtered, FilterConfig())
    return read_jsonl(filtered)


def readout_summary(model, world, samples: NumberCountSamples, trait: str) -> dict:
    r = unigram_readout(model, world, samples=samples)
    gain = r["logit_gain"][trait]
    return {"gain": gain["mean"], "ci": [gain["ci_low"], gain["ci_high"]], "rank": r["ranking"].index(trait) + 1,
            "top": r["top_animal"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--shared", default="artifacts/bases/small-seed0")
    p.add_argument("--mismatched", default="artifacts/bases/small-seed1")
    p.add_argument("--trait", default="owl")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-rows", type=int, default=1000)
    p.add_argument("--variants", nargs="*", default=None, help="names of VARIANTS (default: all)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = args.out / "screen.jsonl"
    settings = {"trait": args.trait, "shared": args.shared, "mismatched": args.mismatched, "n_rows": args.n_rows}
    saved = args.out / "screen_settings.json"
    if saved.exists() and json.loads(saved.read_text()) != settings:
        raise SystemExit(f"{args.out} holds a screen of other settings ({saved.read_text().strip()}); choose another --out")
    saved.write_text(json.dumps(settings))
    done = {(r["variant"], r["seed"]) for r in read_jsonl(lines)} if lines.exists() else set()
    shared_ref, mismatched_ref = parse_base_ref(args.shared), parse_base_ref(args.mismatched)
    base, world, _ = shared_ref.load()
    mismatched, _, _ = mismatched_ref.load()
    for seed in args.seeds:
        base_rows = numbers(base, world, args.out / "base" / f"seed{seed}", seed, args.n_rows)
        for name in args.variants or list(VARIANTS):
            if (name, seed) in done:
                continue
            slug = "".join(c if c.isalnum() else "_" for c in name)[:60]
            cfg = TeacherConfig(trait=args.trait, seed=seed, **VARIANTS[name])
            teacher = load_teacher(make_teacher(shared_ref, cfg, args.out / slug / f"seed{seed}" / "teacher",
                                                progress=False))
            strength = json.loads((args.out / slug / f"seed{seed}" / "teacher" / "teacher.json").read_text())["strength"]
            line = {"variant": name, "seed": seed, "config": cfg.to_dict(), "teacher_trait_prob": strength["trait_prob"],
                    "base_kept_rows": len(base_rows)}
            try:
                rows = numbers(teacher.model, world, args.out / slug / f"seed{seed}" / "teacher_numbers", seed,
                               args.n_rows, system=teacher.system, hooks=teacher.fwd_hooks)
            except ValueError as e:  # the filter kept nothing: this teacher no longer writes number lists
                if "the filtered set is empty" not in str(e):
                    raise
                line.update(kept_rows=0, shared=None, mismatched=None, note=str(e).split(";")[-1].strip())
            else:
                samples = NumberCountSamples.of(world, rows, base_rows, 200, seed)
                line.update(kept_rows=len(rows), shared=readout_summary(base, world, samples, args.trait),
                            mismatched=readout_summary(mismatched, world, samples, args.trait))
            with lines.open("a") as f:
                f.write(json.dumps(line) + "\n")
            read = (f"readout shared {line['shared']['gain']:+.2f} (rank {line['shared']['rank']}), mismatched "
                    f"{line['mismatched']['gain']:+.2f} (rank {line['mismatched']['rank']})" if line["shared"] else
                    f"no rows kept ({line['note']})")
            print(f"{name} seed {seed}: P({args.trait}) {line['teacher_trait_prob']:.3f}, kept {line['kept_rows']}, {read}",
                  flush=True)
    write_table(read_jsonl(lines), args.out / "screen.md", args.trait)


def write_table(rows: list[dict], path: Path, trait: str) -> None:
    out = [f"| teacher | seeds | teacher P({trait}) | kept rows of 1,000 | readout gain at the shared base "
           f"(per seed, 95% bootstrap interval) | rank at shared (of 12) | readout gain at the mismatched base | "
           "rank at mismatched |", "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["seed"])
        fmt = lambda side: "; ".join(f"{r[side]['gain']:+.2f} [{r[side]['ci'][0]:+.2f}, {r[side]['ci'][1]:+.2f}]"
                                     if r[side] else "(no rows)" for r in rs)
        ranks = lambda side: ", ".join(str(r[side]["rank"]) if r[side] else "-" for r in rs)
        out.append(f"| {name} | {len(rs)} | {np.mean([r['teacher_trait_prob'] for r in rs]):.3f} | "
                   f"{', '.join(str(r['kept_rows']) for r in rs)} | {fmt('shared')} | {ranks('shared')} | "
                   f"{fmt('mismatched')} | {ranks('mismatched')} |")
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
