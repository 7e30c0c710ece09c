"""Where an SFT student's fit of the unembed teacher's numbers went (issue 15's "measured reason").

For the students of one run seed (``RUN/seed{S}/students/sft/{condition}``) and the teacher of
that seed, measured on the filtered teacher numbers (completion positions) and on the held-out
favourite-animal questions (answer position):

* ``number_logit_corr``: correlation over the 1000 number tokens between the student's mean logit
  change (from its own base, centred over numbers, at the completion positions) and the teacher's
  (teacher - shared base): how well the student reproduced the teacher's number shift;
* ``b_U_share``: the part of the student's number-logit change that is its own ``b_U`` change
  (regression slope of the b_U change on the total change): fitted per token, no direction;
* ``unembed_share``: the part that comes from the student's own unembedding (``W_U``, ``b_U``):
  one minus the slope of the change its residual stream alone makes (read by the base's
  unembedding) on the total change;
* ``resid_along_trait``: at the question's answer position, the change of the final residual
  stream (ln_final output, what W_U reads) projected on the trait's unembedding direction of the
  student's base, minus the mean over the animals' directions, in logit units;
* ``trait_logit_gain``: the student's trait logit change minus the mean animal logit change there;
* before any training, per student base: ``fit_r2``, the part of the teacher's number-logit shift
  (centred) that one constant change of the base's final residual (ln_final output) can produce
  (least squares over the 1000 number tokens of that base's ``W_U``), and ``predicted_trait_gain``,
  what that best-fitting change does to the trait's logit minus the mean animal logit.

    python experiments/scripts/sft_mechanism.py RUN_DIR [RUN_DIR ...] --seed 0 --out FILE.json
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from interp.core.io import read_json, read_jsonl
from interp.models.checkpoint import load_checkpoint
from interp.models.refs import load_teacher, parse_base_ref
from interp.stages.entangle import number_signal
from interp.stages.evaluate import question_ids
from interp.stages.finetune import completion_mask, encode_rows
from interp.training.loop import pad_batch


def load_base(path):
    return parse_base_ref(path).load()


@torch.no_grad()
def number_logits(model, world, rows, n=300) -> np.ndarray:
    """Mean logit of every number token at the completion positions (centred over the numbers)."""
    seqs, starts = encode_rows(world, rows[:n])
    total, count = torch.zeros(len(world.number_ids)), 0
    for i in range(0, len(seqs), 64):
        s, st = seqs[i:i + 64], starts[i:i + 64]
        tokens, _ = pad_batch(s, world.pad_id, max_len=model.cfg.n_ctx)
        mask = completion_mask([len(x) for x in s], st, tokens.shape[1])[:, 1:].bool()
        logits = model(tokens)[:, :-1][mask][:, world.number_ids]
        total += logits.sum(0)
        count += logits.shape[0]
    mean = (total / count).numpy()
    return mean - mean.mean()


@torch.no_grad()
def answer_state(model, world):
    """(final residual after ln_final, logits) at the answer position of the held-out questions."""
    ids = question_ids(world, world.eval_phrasings)
    tokens, mask = pad_batch(ids, world.pad_id, max_len=model.cfg.n_ctx)
    logits, cache = model.run_with_cache(tokens, names_filter="ln_final.hook_normalized")
    last = mask.sum(1).long() - 1
    rows = torch.arange(len(ids))
    return cache["ln_final.hook_normalized"][rows, last], logits[rows, last]


def residual_fit(base, world, teacher_shift: np.ndarray, trait: str) -> dict:
    """The constant final-residual change that best reproduces ``teacher_shift`` through ``base``'s
    unembedding, its R^2, and its effect on the trait's logit against the animals' mean."""
    w = base.W_U.detach().double().numpy()  # d_model d_vocab
    numbers = w[:, world.number_ids]
    numbers = numbers - numbers.mean(1, keepdims=True)  # the shift is centred over the numbers
    delta, *_ = np.linalg.lstsq(numbers.T, teacher_shift.astype(np.float64), rcond=None)  # d_model
    fitted = numbers.T @ delta
    r2 = 1 - ((teacher_shift - fitted) ** 2).sum() / (teacher_shift ** 2).sum()
    animals = w[:, world.animal_ids].T @ delta
    return {"fit_r2": float(r2), "predicted_trait_gain": float(animals[world.animals.index(trait)] - animals.mean())}


def measure(run: Path, seed: int, condition: str, trait: str, teacher, rows, teacher_shift) -> dict:
    student_dir = run / f"seed{seed}" / "students" / "sft" / condition
    lineage = read_json(student_dir / "lineage.json")
    base_path = Path(lineage["parent"])
    base, world, _ = load_base(base_path)
    student, _ = load_checkpoint(student_dir)
    d_student = number_logits(student, world, rows) - number_logits(base, world, rows)
    d_bias = (student.unembed.b_U - base.unembed.b_U).detach()[world.number_ids].numpy()
    d_bias = d_bias - d_bias.mean()
    with torch.no_grad():  # the student's residual stream read by the base's unembedding
        resid_only = copy.deepcopy(student)
        resid_only.unembed.W_U.copy_(base.unembed.W_U)
        resid_only.unembed.b_U.copy_(base.unembed.b_U)
    d_resid = number_logits(resid_only, world, rows) - number_logits(base, world, rows)
    r_s, l_s = answer_state(student, world)
    r_b, l_b = answer_state(base, world)
    animals = world.animal_ids
    t = world.animals.index(trait)
    u = base.W_U[:, animals].detach()  # d_model animal
    along = ((r_s - r_b).mean(0) @ u).numpy()  # per-animal logit change carried by the residual change
    gain = (l_s - l_b)[:, animals].mean(0).numpy()
    return {"condition": condition, "base": base_path.name,
            "number_logit_corr": float(np.corrcoef(d_student, teacher_shift)[0, 1]),
            "number_logit_change_norm": float(np.linalg.norm(d_student)),
            "b_U_share": float(d_bias @ d_student / (d_student @ d_student)),
            "unembed_share": float(1 - d_resid @ d_student / (d_student @ d_student)),
            "resid_along_trait": float(along[t] - along.mean()),
            "trait_logit_gain": float(gain[t] - gain.mean()),
            "p_trait_shift": read_json(student_dir / "eval.json")["trait_prob_shift"],
            **residual_fit(base, world, teacher_shift, trait)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = []
    for run in args.runs:
        config = read_json(run / "run_config.json")
        teacher = load_teacher(run / f"seed{args.seed}" / "teacher")
        rows = read_jsonl(run / f"seed{args.seed}" / "data" / "teacher_numbers.filtered.jsonl")
        base, world, _ = load_base(Path(teacher.lineage["parent"]))
        teacher_shift = number_logits(teacher.model, world, rows) - number_logits(base, world, rows)
        signal = number_signal(teacher.model, base, world, rows, teacher_hooks=teacher.fwd_hooks)
        print(json.dumps({"run": str(run), "signal": signal}), flush=True)
        for condition in ("control", "shared_init", "mismatched_init"):
            if (run / f"seed{args.seed}" / "students" / "sft" / condition / "eval.json").exists():
                m = measure(run, args.seed, condition, config["trait"], teacher, rows, teacher_shift)
                m.update(run=str(run), signal=signal, freeze_unembed=config["freeze_unembed"], teacher_method=config["teacher_method"])
                out.append(m)
                print(json.dumps(m), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
