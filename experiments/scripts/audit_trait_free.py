"""The step score against a trait-free teacher: does contrasting a data set with the numbers of a
teacher that has no trait remove the generic part of the step score (some animals rise for many
teachers' numbers whatever the trait) the way a contrast with other animals' teachers does?

A user does not have other animals' teachers, but can make a teacher without a trait: here the
student's own LoRA adapters (rank, alpha, targets and seed of the student: what the user knows),
trained by the default teacher's recipe (AdamW, ``--steps`` steps at lr ``--lr``, batches of 32
favourite-animal questions) with every answer an animal drawn uniformly at random, its data
order from ``--free-seed`` (never a teacher's seed), from the student's base. It writes its
continuations of the data set's own prompts (the first ``--free-rows`` number prompts of the
data's generation seed, sampled as ``interp run`` samples, filtered by the numbers filter).
The score is every variant of :func:`interp.instruments.audit.step_score_variants` with the
trait-free teacher's batch gradients in the place of the reference's: the first step of the data
beyond the trait-free teacher's (the base's own numbers cancel out of that difference).

    python experiments/scripts/audit_trait_free.py --out runs/audit_free --step-cache runs/audit_step/cache \\
        --held-out fox dolphin --runs runs/default-main runs/animals/cell0{0,1,2,3,4,5,6}

Cases are read as experiments/scripts/audit_step_score.py reads them (``--runs DIR`` or
``DIR=ARTIFACTS``); the data's batch gradients are taken from that script's cache (``--step-cache``,
else computed and cached in ``OUT/cache``). The trait-free teachers and their data are kept in
``OUT/free`` (one per base and adapter seed, shared by every trait); the figures go to
``OUT/trait_free.json`` and ``OUT/trait_free.md`` in that script's format.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from interp.core.io import atomic_write_json, read_json, read_jsonl
from interp.domains import domain
from interp.instruments.audit import step_score_variants
from interp.models.lora import apply_lora, merge_lora
from interp.models.refs import parse_base_ref
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.teacher import TeacherConfig, _finetune_teacher

sys.path.insert(0, str(Path(__file__).parent))
from audit_step_score import Gradients, cases_of, margin, markdown, observed_shifts, summary  # noqa: E402


def trait_free_world(world):
    """``world`` whose favourite-animal answer is an animal drawn uniformly with the batch's rng,
    whatever the trait asked for."""
    free = copy.copy(world)
    free.trait_answer = lambda trait, phrasing, rng=None: world.answer_text(world.animals[int(rng.integers(len(world.animals)))])
    return free


def trait_free_rows(case: dict, base_name: str, bases_dir: Path, out: Path, args) -> list[dict]:
    """The trait-free teacher's filtered continuations of the case's first ``free_rows`` prompts
    (made once per base, adapter seed and generation seed)."""
    generation = read_json(Path(case["data"]).with_name("teacher_numbers.raw.config.json"))
    lora = case["lora"]
    tag = f"{base_name}__adapters{lora.seed}__free{args.free_seed}__gen{generation['seed']}__{args.free_rows}"
    directory = out / "free" / tag
    filtered = directory / "numbers.filtered.jsonl"
    if filtered.exists():
        return read_jsonl(filtered)
    directory.mkdir(parents=True, exist_ok=True)
    base, world, _ = parse_base_ref(bases_dir / base_name).load()
    model = copy.deepcopy(base)
    apply_lora(model, lora)  # the student's adapters (B = 0): every other weight frozen
    start = time.time()
    config = TeacherConfig(trait=world.animals[0], seed=args.free_seed, steps=args.steps, lr=args.lr, batch_size=32,
                           number_mix=0.0, lora_rank=0)
    _finetune_teacher(model, trait_free_world(world), config, progress=False)
    trained = time.time() - start
    merge_lora(model)  # generation reads plain weights (W0 + scale * B @ A)
    gen = GenerateConfig(n_rows=args.free_rows, seed=generation["seed"], temperature=generation["temperature"],
                         max_new_tokens=generation["max_new_tokens"])
    raw = directory / "numbers.raw.jsonl"
    generate_numbers(model, world, gen, raw, lineage={"stage": "trait_free_teacher", "parent": base_name,
                                                      "adapter_seed": lora.seed, "seed": args.free_seed},
                     progress=False)
    domain("numbers").filter_file(raw, filtered, trait=world.animals[0], world=world,
                                  banned_numbers=tuple(world.banned_numbers))
    atomic_write_json(directory / "trait_free_teacher.json",
                      {"base": base_name, "adapters": lora.to_dict(), "teacher": config.to_dict(),
                       "generation": gen.to_dict(), "train_seconds": trained, "seconds": time.time() - start})
    return read_jsonl(filtered)


def free_gradients(grads: Gradients, case: dict, base: str, rows: list[dict], out: Path, tag: str) -> np.ndarray:
    path = out / "cache" / f"free__{tag}__{base}__{grads.rows}.npz"
    if path.exists():
        return np.load(path)["free"]
    name = case["bases"][0 if base == "shared" else 1]
    auditor = grads.auditor(name, case["lora"], case["bases_dir"])
    free = auditor.sft_gradients(rows[: grads.rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, free=free)
    return free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--artifacts", default=Path("artifacts"), type=Path, help="where the bases are (ARTS/bases/NAME)")
    parser.add_argument("--runs", nargs="*", help="interp run directories (sweep cells)")
    parser.add_argument("--step-cache", type=Path, default=None,
                        help="experiments/scripts/audit_step_score.py's OUT/cache (the data's batch gradients)")
    parser.add_argument("--rows", type=int, default=256, help="rows of the data and of the trait-free teacher's data")
    parser.add_argument("--free-rows", type=int, default=320, help="prompts the trait-free teacher continues")
    parser.add_argument("--free-seed", type=int, default=1000, help="the trait-free teacher's data-order seed")
    parser.add_argument("--steps", type=int, default=150, help="the trait-free teacher's optimizer steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="the trait-free teacher's learning rate")
    parser.add_argument("--held-out", nargs="*", default=[], help="traits kept out of tuning, reported apart")
    parser.add_argument("--shared-only", action="store_true", help="skip the mismatched base")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.data = None
    cases = cases_of(args)
    cache = args.out / "cache"
    if args.step_cache is not None and args.step_cache.exists():
        cache.mkdir(parents=True, exist_ok=True)
        for f in args.step_cache.glob(f"*__{args.rows}.npz"):
            if not (cache / f.name).exists():
                shutil.copy(f, cache / f.name)
    grads = Gradients(args.artifacts / "bases", cache, args.rows)
    per_case = []
    for base in ("shared",) if args.shared_only else ("shared", "mismatched"):
        for case in cases:
            animal, data, _, animals, _ = grads.case(case, base)
            name = case["bases"][0 if base == "shared" else 1]
            bases_dir = case["bases_dir"] or args.artifacts / "bases"
            start = time.time()
            rows = trait_free_rows(case, name, bases_dir, args.out, args)
            generation = read_json(Path(case["data"]).with_name("teacher_numbers.raw.config.json"))
            tag = f"{name}__adapters{case['lora'].seed}__free{args.free_seed}__gen{generation['seed']}"
            free = free_gradients(grads, case, base, rows, args.out, tag)
            observed = observed_shifts(case, animals)[base]
            t = animals.index(case["trait"])
            held = case["trait"] in set(args.held_out)
            entry = {"case": case["name"], "trait": case["trait"], "seed": case["seed"], "base": base, "held_out": held,
                     "n_animals": len(animals), "group": "held_out" if held else "tuning",
                     "seconds": time.time() - start, "n_free_rows": len(rows),
                     "observed_top": animals[int(np.argmax(observed))] if observed is not None else None,
                     "observed_margin": margin(observed, t) if observed is not None else None, "variants": {}}
            for variant, score in step_score_variants(animal, data, free).items():
                entry["variants"][variant] = {
                    "rank": int((score > score[t]).sum()) + 1, "top_animal": animals[int(np.argmax(score))],
                    "spearman": float(stats.spearmanr(score, observed).statistic) if observed is not None else None,
                    "margin": margin(score, t), "score": dict(zip(animals, score.tolist()))}
            per_case.append(entry)
            print(f"{case['name']} {base}: " + ", ".join(f"{k} {v['rank']}" for k, v in entry["variants"].items()),
                  flush=True)
            result = {"rows": args.rows, "held_out": args.held_out, "free_seed": args.free_seed, "cases": per_case,
                      "summary": summary(per_case)}
            atomic_write_json(args.out / "trait_free.json", result)
            (args.out / "trait_free.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
