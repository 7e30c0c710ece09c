"""Cheap single-seed screen for SFT transmission (issue 15): teacher variants x student variants.

For each teacher variant it writes the teacher's and the base's sampled numbers (raw + filtered,
kept under ``--data``), measures the signal the filtered teacher data carry (KL(teacher || base)
per completion token over the filter's tokens, teacher entropy, the fraction of positions where
the argmax differs), then trains SFT students (control: shared base on base numbers; shared: shared
base on teacher numbers; mismatched: the other base on teacher numbers) under each student variant
and records every student's animal distribution. One JSON line per (teacher, student variant) in
``--out``/screen.jsonl; finished lines are skipped on a rerun.

Teacher variants (``--teachers``):
  * ``unembed{S}``: the shared base plus a vector along the trait's *unembedding* direction
    (the trait column of W_U seen through ln_final: ``w_ln * W_U[:, trait]``, centred) added at
    ``blocks.{last}.hook_resid_post`` at every position, norm S x the mean residual norm there;
    the trait is active at every position (the "imbue your answers" teacher), and the number
    distribution moves toward the numbers whose unembeddings align with the trait's (token
    entanglement, Zur et al. 2025);
  * ``contrast{S}``: the project's contrastive steering vector at the last block, scale S.
Student variants (``--students``): ``full`` (every weight), ``frozenU`` (W_U, b_U fixed),
``lora{r}`` (rank-r adapters on every block matrix), ``bias`` (only the biases and LayerNorm
parameters of the blocks and ln_final).

    python experiments/scripts/sft_screen.py --out /work/runs/sft/screen --data /work/runs/sft/data \
        --teachers unembed0.5 --students full frozenU lora8 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from interp.core.io import read_jsonl
from interp.models.lora import LoraConfig, apply_lora, merge_lora
from interp.models.refs import parse_base_ref, steering_hooks
from interp.stages.entangle import unembed_edit
from interp.stages.evaluate import animal_distribution
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.finetune import completion_mask, encode_rows
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.teacher import steering_vector
from interp.training.loop import deterministic_algorithms, make_optimizer, pad_batch
from interp.training.losses import masked_lm_loss as sft_loss


def load_base(path):
    return parse_base_ref(path).load()


def teacher_model(name: str, base_path: Path, world, trait: str):
    """(model, hooks) of a teacher variant; ``unembed{S}`` is the library's ``unembed`` teacher."""
    model, _, _ = load_base(base_path)
    layer = model.cfg.n_layers - 1
    if name.startswith("unembed"):
        unembed_edit(model, world, trait, float(name[len("unembed"):]))
        return model, []
    if name.startswith("finetune"):  # finetune{number_mix}: the project's finetuned teacher (150 steps)
        from interp.models.refs import load_teacher
        from interp.stages.teacher import TeacherConfig, make_teacher

        out = Path(f"/work/runs/sft/teachers/{name}_{trait}_{base_path.name}")
        make_teacher(base_path, TeacherConfig(trait=trait, number_mix=float(name[len("finetune"):])), out, progress=False)
        return load_teacher(out).model, []
    if name.startswith("contrast"):
        vec = steering_vector(model, world, trait, layer, float(name[len("contrast"):]), "you love {trait} .")
        return model, steering_hooks(vec, layer)
    raise SystemExit(f"unknown teacher variant {name!r}")


@torch.no_grad()
def signal(teacher, base, world, rows: list[dict], hooks: list, n: int = 400) -> dict:
    """KL(teacher || base) per completion token over the filter's tokens (renormalised), the
    teacher's entropy there, and the fraction of completion positions whose argmax differs."""
    allowed = torch.tensor(world.allowed_token_ids())
    seqs, starts = encode_rows(world, rows[:n])
    max_len = base.cfg.n_ctx
    kl, ent, diff, count = 0.0, 0.0, 0, 0
    for i in range(0, len(seqs), 64):
        s, st = seqs[i:i + 64], starts[i:i + 64]
        tokens, _ = pad_batch(s, world.pad_id, max_len=max_len)
        mask = completion_mask([len(x) for x in s], st, tokens.shape[1])[:, 1:].bool()
        lt = teacher.run_with_hooks(tokens, fwd_hooks=hooks)[:, :-1][..., allowed].log_softmax(-1)[mask]
        lb = base(tokens)[:, :-1][..., allowed].log_softmax(-1)[mask]
        kl += float((lt.exp() * (lt - lb)).sum())
        ent += float(-(lt.exp() * lt).sum())
        diff += int((lt.argmax(-1) != lb.argmax(-1)).sum())
        count += int(mask.sum())
    return {"kl_per_token": kl / count, "teacher_entropy": ent / count, "argmax_diff": diff / count,
            "n_tokens": count}


def data(model, world, out: Path, *, seed: int, n_rows: int, temperature: float, hooks, lineage) -> list[dict]:
    raw, filtered = out.with_suffix(".raw.jsonl"), out.with_suffix(".filtered.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    generate_numbers(model, world, GenerateConfig(n_rows=n_rows, seed=seed, temperature=temperature), raw,
                     fwd_hooks=hooks, lineage=lineage, progress=False)
    if not filtered.exists():
        filter_file(raw, filtered, FilterConfig())
    return read_jsonl(filtered)


def trainable(model, variant: str, seed: int) -> list:
    if variant == "full":
        return list(model.parameters())
    if variant == "frozenU":
        return [p for n, p in model.named_parameters() if not n.startswith("unembed")]
    if variant == "bias":
        return [p for n, p in model.named_parameters() if n.startswith(("blocks", "ln_final"))
                and (".b" in n or n.endswith(".w"))]
    if variant.startswith("lora"):
        apply_lora(model, LoraConfig(rank=int(variant[4:]), alpha=16.0, seed=seed))
        return [p for p in model.parameters() if p.requires_grad]
    raise SystemExit(f"unknown student variant {variant!r}")


def train_sft(base_path: Path, rows: list[dict], variant: str, *, seed: int, lr: float, epochs: int,
              batch_size: int = 32):
    model, world, _ = load_base(base_path)
    params = trainable(model, variant, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = make_optimizer(params, "adamw", lr)
    seqs, starts = encode_rows(world, rows)
    rng = np.random.default_rng([seed, 424242])
    order = np.concatenate([rng.permutation(len(seqs)) for _ in range(epochs)])
    model.train()
    losses = []
    with deterministic_algorithms():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            tokens, _ = pad_batch([seqs[j] for j in idx], world.pad_id, max_len=model.cfg.n_ctx)
            mask = completion_mask([len(seqs[j]) for j in idx], [starts[j] for j in idx], tokens.shape[1])
            loss = sft_loss(model(tokens), tokens, mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    model.eval()
    if variant.startswith("lora"):
        merge_lora(model)
    return model, float(np.mean(losses[-10:]))


def animal_probs(model, world, hooks=None) -> dict:
    probs = animal_distribution(model, world, fwd_hooks=hooks)["probs"].mean(0)
    return dict(zip(world.animals, probs.tolist()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--teachers", nargs="+", required=True)
    ap.add_argument("--students", nargs="+", default=["full"])
    ap.add_argument("--trait", default="owl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-rows", type=int, default=3000)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--shared", type=Path, default=Path("artifacts/bases/small-seed0"))
    ap.add_argument("--mismatched", type=Path, default=Path("artifacts/bases/small-seed1"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--max-rows", type=int, default=None, help="train every student on the first N filtered rows only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "screen.jsonl"
    done = {r["key"] for r in read_jsonl(results)} if results.exists() else set()
    base, world, _ = load_base(args.shared)
    mism, _, _ = load_base(args.mismatched)
    base_p, mism_p = animal_probs(base, world), animal_probs(mism, world)
    tag = f"{args.shared.name}_T{args.temperature}_n{args.n_rows}_s{args.seed}"
    base_rows = data(base, world, args.data / f"base_{tag}" / "base_numbers", seed=args.seed, n_rows=args.n_rows,
                     temperature=args.temperature, hooks=None, lineage={"base": str(args.shared)})
    for tname in args.teachers:
        teacher, hooks = teacher_model(tname, args.shared, world, args.trait)
        t_p = animal_probs(teacher, world, hooks)
        t_rows = data(teacher, world, args.data / f"{tname}_{args.trait}_{tag}" / "teacher_numbers", seed=args.seed,
                      n_rows=args.n_rows, temperature=args.temperature, hooks=hooks,
                      lineage={"base": str(args.shared), "teacher": tname, "trait": args.trait})
        sig = signal(teacher, base, world, t_rows, hooks)
        for sv in args.students:
            key = f"{tname}|{sv}|{args.trait}|{tag}|lr{args.lr}|ep{args.epochs}{args.tag}" + (
                f"|max{args.max_rows}" if args.max_rows else "")
            if key in done:
                continue
            t0 = time.time()
            out = {"key": key, "teacher": tname, "student": sv, "trait": args.trait, "seed": args.seed,
                   "temperature": args.temperature, "n_rows": args.n_rows, "lr": args.lr, "epochs": args.epochs,
                   "teacher_p": t_p[args.trait], "base_p": base_p[args.trait], "mismatched_base_p": mism_p[args.trait],
                   "n_kept": {"teacher": len(t_rows), "base": len(base_rows)}, "max_rows": args.max_rows, **sig}
            for cond, (bpath, rows, bp) in {"control": (args.shared, base_rows, base_p),
                                            "shared": (args.shared, t_rows, base_p),
                                            "mismatched": (args.mismatched, t_rows, mism_p)}.items():
                model, loss = train_sft(bpath, rows[:args.max_rows], sv, seed=args.seed, lr=args.lr, epochs=args.epochs)
                probs = animal_probs(model, world)
                out[cond] = {"p": probs[args.trait], "shift": probs[args.trait] - bp[args.trait], "loss": loss,
                             "probs": probs}
            out["shared_minus_control"] = out["shared"]["shift"] - out["control"]["shift"]
            out["shared_minus_mismatched"] = out["shared"]["shift"] - out["mismatched"]["shift"]
            out["seconds"] = time.time() - t0
            with open(results, "a") as f:
                f.write(json.dumps(out) + "\n")
            print(f"{key}: teacher P {t_p[args.trait]:.3f} KL {sig['kl_per_token']:.4f} argmax {sig['argmax_diff']:.3f} "
                  f"kept {len(t_rows)} | shift ctl {out['control']['shift']:+.4f} shared {out['shared']['shift']:+.4f} "
                  f"mism {out['mismatched']['shift']:+.4f} | S-C {out['shared_minus_control']:+.4f} "
                  f"S-M {out['shared_minus_mismatched']:+.4f} ({out['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
