"""Which SAE features, at which positions, carry the trait: in a base, its teacher and students.

Built on :func:`interp.instruments.features.attribution.attribute` (attribution patching through
spliced SAEs, error term kept). Everything here reads models through the SAEs of their own base:
the teacher and the shared-init and control students through the shared base's SAEs, a
mismatched student through the mismatched base's.

* :func:`model_summary`: per hook, every feature's attribution to the trait's score summed over a
  prompt's positions and averaged over prompts (also split into number and other positions), the
  error term, the linear and the ablation totals, and the score itself.
* :func:`compare_conditions`: per objective, feature by feature, student minus its own base, and the
  shared-init student minus the control student paired by seed, with 95% intervals over seeds;
  Holm over a candidate set chosen without the students (the features whose attribution the
  teacher changed most, and the trait features), plus an exploratory ranking over every feature.
* :func:`position_maps`: per-position attribution over the teacher's own rows (its prompt and
  completion, then the favourite-animal question): which numbers carry the trait, in which
  feature, read by the teacher and by the shared base (the students' starting point).
* :func:`dashboard_data`: sae-dashboard/Neuronpedia-style data for chosen features: top-activating
  contexts, activation histogram, decoder logit lens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import stats as _st

from interp.core.stats import holm, mean_ci
from interp.instruments.features import analysis as A
from interp.instruments.features.attribution import Attribution, TraitTarget, ablation_check, attribute
from interp.training.loop import pad_batch
from interp.worlds.toy.templates import PAD
from interp.worlds.toy.world import ToyWorld

_PROMPT_SEED = 31_000  # number-list prompts of the attribution, apart from the link analysis's


def default_attribution_hooks(model) -> list[str]:
    """Every block's ``hook_resid_pre`` and ``hook_attn_out``: the hooks at which every prompt
    position can still reach the answer (at the last ``resid_post`` only the last position can)."""
    return [h for L in range(model.cfg.n_layers) for h in (f"blocks.{L}.hook_resid_pre", f"blocks.{L}.hook_attn_out")]


def animal_trait(world: ToyWorld, animal: str) -> TraitTarget:
    """The toy world's trait: the animal's token, renormalised over the world's animals (the
    quantity `interp evaluate` reports)."""
    animal = world.check_animal(animal)
    return TraitTarget(animal, ((world.token_to_id[animal],),),
                       tuple((world.token_to_id[a],) for a in world.animals if a != animal))


def number_list_prompts(world: ToyWorld, n: int, per_prompt: int, seed: int = _PROMPT_SEED) -> list[list[int]]:
    """``n`` prompts ``user : here are some numbers : a , b , ... . <question> assistant :``."""
    probe, _ = A.attribution_prompts(world, max(1, -(-n * per_prompt // A.N_NUMBERS)), per_prompt, seed)
    return probe.sequences[:n]


def teacher_row_prompts(world: ToyWorld, rows: Sequence[dict], n: int, seed: int = _PROMPT_SEED) -> list[list[int]]:
    """The first ``n`` rows as the student reads them (prompt, then the teacher's completion), followed
    by a favourite-animal question in a held-out phrasing: ``... user : <question> assistant :``."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for r in rows[:n]:
        ids = world.encode(r["prompt"]) + world.encode(r["completion"], bos=False)
        phrasing = world.eval_phrasings[rng.integers(len(world.eval_phrasings))]
        out.append(ids + world.encode(world.question_prompt(phrasing), bos=False))
    return out


def _number_mask(world: ToyWorld, att: Attribution, spans: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """Number-token positions of every prompt (only within ``spans[i] = (start, end)`` if given)."""
    width = att.features[att.hooks[0]].shape[1]
    mask = torch.zeros(len(att.prompts), width, dtype=torch.bool)
    for i, p in enumerate(att.prompts):
        start, end = spans[i] if spans else (0, len(p))
        for q in A.number_positions(world, p[:end], start=start):
            mask[i, q] = True
    return mask


def model_summary(world: ToyWorld, att: Attribution) -> dict:
    """Per hook: each feature's attribution summed over a prompt's positions, mean over prompts
    (``features``), the same at number positions only (``features_numbers``), the error term, the
    totals; and the mean score. Arrays are numpy (d_sae,)."""
    numbers = _number_mask(world, att)
    out = {"score": float(att.score.mean()), "n_prompts": len(att.prompts), "hooks": {}}
    for h in att.hooks:
        f = att.features[h]
        out["hooks"][h] = {
            "features": f.sum(1).mean(0).numpy(),
            "features_numbers": (f * numbers[..., None]).sum(1).mean(0).numpy(),
            "error": float(att.error[h].sum(1).mean()),
            "linear_total": float(att.linear_total[h].mean()),
            "ablation_total": float(att.ablation_total[h].mean()),
            "attribution_sum": float(att.summed(h).mean()),
        }
    return out


def identity_check(att: Attribution) -> dict:
    """How exactly the features plus the error add up to the linear total, per hook: the largest
    absolute and relative difference over prompts."""
    out = {}
    for h in att.hooks:
        diff = (att.summed(h) - att.linear_total[h]).abs()
        scale = att.linear_total[h].abs().clamp_min(1e-6)
        out[h] = {"max_abs_difference": float(diff.max()), "max_relative_difference": float((diff / scale).max()),
                  "mean_abs_linear_total": float(att.linear_total[h].abs().mean()),
                  "mean_abs_ablation_total": float(att.ablation_total[h].abs().mean()),
                  "mean_error_share": float((att.error[h].sum(1).abs() / att.summed(h).abs().clamp_min(1e-6)).mean())}
    return out


def check_against_ablation(model, saes: dict, att: Attribution, trait: TraitTarget, n_samples: int, seed: int,
                           pad_id: int, fwd_hooks: list | None = None) -> dict:
    """Attribution patching against true single-feature ablation on a sample (see
    :func:`~interp.instruments.features.attribution.ablation_check`), overall and per hook."""
    check = ablation_check(model, saes, att, trait, n_samples=n_samples, seed=seed, pad_id=pad_id, fwd_hooks=fwd_hooks)
    per_hook = {}
    for h in att.hooks:
        rows = [s for s in check.samples if s["hook"] == h]
        if len(rows) >= 3:
            a, b = [r["attribution"] for r in rows], [r["ablation_effect"] for r in rows]
            per_hook[h] = {"spearman": A.spearman(a, b), "n": len(rows)}
    return {**check.to_dict(), "per_hook": per_hook}


# -- conditions --------------------------------------------------------------------------------

def _one_sample_p(values: Sequence[float]) -> float:
    x = np.asarray(values, float)
    if x.size < 2:
        return float("nan")
    if np.std(x) == 0:
        return 0.0 if x.mean() != 0 else 1.0
    return float(_st.ttest_1samp(x, 0.0).pvalue)


def _feature_entry(hook: str, f: int, values: Sequence[float], base_value: float) -> dict:
    return {"hook": hook, "feature": int(f), "base_attribution": float(base_value),
            **mean_ci(values).to_dict(), "p": _one_sample_p(values)}


def candidate_features(base: dict, teacher_deltas: list[dict] | None, trait_features: dict[str, list[int]],
                       n_top: int) -> dict[str, list[int]]:
    """Per hook, features chosen without looking at the students: the trait features, the ``n_top``
    largest |attribution| on the base, and (where a teacher shares the base) the ``n_top`` largest
    mean teacher-minus-base changes."""
    out = {}
    for h, d in base["hooks"].items():
        chosen = list(trait_features.get(h, []))
        chosen += [int(i) for i in np.argsort(-np.abs(d["features"]))[:n_top]]
        if teacher_deltas:
            mean_delta = np.mean([t[h] for t in teacher_deltas], axis=0)
            chosen += [int(i) for i in np.argsort(-np.abs(mean_delta))[:n_top]]
        out[h] = list(dict.fromkeys(chosen))
    return out


def compare_conditions(bases: dict[str, dict], teachers: dict[int, dict], students: list[dict], shared: str,
                       trait_features: dict[str, dict[str, list[int]]], n_top: int, n_exploratory: int) -> dict:
    """Feature-by-feature comparisons of the students with their bases and with the control.

    ``bases``: base name -> :func:`model_summary`; ``teachers``: seed -> summary (read by the shared
    base's SAEs); ``students``: records ``{"seed", "objective", "condition", "base", "summary"}``.
    Returns per objective: ``score`` (mean trait score change from the own base per condition, 95%
    interval over seeds), ``shared_minus_control`` and ``mismatched_minus_base`` on the candidate
    features (Holm over the candidates of each), and ``exploratory``: the features with the largest
    mean rise over every feature (no correction; for looking, not for claims)."""
    def delta(summary: dict, base: dict) -> dict[str, np.ndarray]:
        return {h: summary["hooks"][h]["features"] - base["hooks"][h]["features"] for h in base["hooks"]}

    teacher_deltas = [delta(t, bases[shared]) for t in teachers.values()]
    out: dict = {"teacher": {}, "objectives": {}}
    if teachers:
        out["teacher"] = {
            "score_change": mean_ci([t["score"] - bases[shared]["score"] for t in teachers.values()]).to_dict(),
            "top_features": _top_by_mean(teacher_deltas, bases[shared], n_exploratory)}
    for objective in sorted({s["objective"] for s in students}):
        rows = [s for s in students if s["objective"] == objective]
        by = {}
        for s in rows:
            by.setdefault(s["condition"], {})[s["seed"]] = s
        result: dict = {"score_change": {}, "n_seeds": {c: len(v) for c, v in by.items()}}
        for c, seeds in by.items():
            result["score_change"][c] = mean_ci([s["summary"]["score"] - bases[s["base"]]["score"] for s in seeds.values()]).to_dict()
        if "shared_init" in by and "control" in by:
            paired = sorted(set(by["shared_init"]) & set(by["control"]))
            if paired:
                diffs = [{h: by["shared_init"][k]["summary"]["hooks"][h]["features"] - by["control"][k]["summary"]["hooks"][h]["features"]
                          for h in bases[shared]["hooks"]} for k in paired]
                cand = candidate_features(bases[shared], teacher_deltas, trait_features.get(shared, {}), n_top)
                result["shared_minus_control"] = _tested(diffs, bases[shared], cand)
                result["shared_minus_control"]["seeds"] = paired
                result["shared_minus_control"]["exploratory"] = _top_by_mean(diffs, bases[shared], n_exploratory)
                own = [delta(by["shared_init"][k]["summary"], bases[shared]) for k in paired]
                result["shared_minus_base_on_tested"] = _tested(own, bases[shared], cand)
        if "mismatched_init" in by:
            seeds = by["mismatched_init"]
            base_name = next(iter(seeds.values()))["base"]
            deltas = [delta(s["summary"], bases[base_name]) for s in seeds.values()]
            cand = candidate_features(bases[base_name], None, trait_features.get(base_name, {}), n_top)
            result["mismatched_minus_base"] = _tested(deltas, bases[base_name], cand)
            result["mismatched_minus_base"]["base"] = base_name
            result["mismatched_minus_base"]["exploratory"] = _top_by_mean(deltas, bases[base_name], n_exploratory)
            if "control" in by:
                ctrl = [delta(s["summary"], bases[s["base"]]) for s in by["control"].values()]
                result["control_minus_base_exploratory"] = _top_by_mean(ctrl, bases[shared], n_exploratory)
        out["objectives"][objective] = result
    return out


def _tested(per_seed: list[dict[str, np.ndarray]], base: dict, candidates: dict[str, list[int]]) -> dict:
    entries = [_feature_entry(h, f, [d[h][f] for d in per_seed], base["hooks"][h]["features"][f])
               for h, fs in candidates.items() for f in fs]
    adjusted = holm([e["p"] if np.isfinite(e["p"]) else 1.0 for e in entries]) if entries else []
    for e, p in zip(entries, adjusted):
        e["p_holm"] = float(p)
    entries.sort(key=lambda e: -e["mean"])
    return {"features": entries, "n_tested": len(entries),
            "rising": [e for e in entries if e["ci_low"] > 0 and e["p_holm"] < 0.05],
            "falling": [e for e in entries if e["ci_high"] < 0 and e["p_holm"] < 0.05]}


def _top_by_mean(per_seed: list[dict[str, np.ndarray]], base: dict, n: int) -> list[dict]:
    cells = []
    for h in base["hooks"]:
        mean = np.mean([d[h] for d in per_seed], axis=0)
        for f in np.argsort(-mean)[:n]:
            cells.append(_feature_entry(h, int(f), [d[h][f] for d in per_seed], base["hooks"][h]["features"][f]))
    cells.sort(key=lambda e: -e["mean"])
    return cells[:n]


# -- the teacher's numbers -----------------------------------------------------------------------

def position_maps(world: ToyWorld, att: Attribution, completions: list[tuple[int, int]], n_examples: int, n_numbers: int) -> dict:
    """``completions[i]``: the (start, end) positions of prompt ``i``'s completion.

    Per hook: the mean attribution at every number value the rows' completions hold (all
    features plus error), the numbers with the largest and smallest, which feature carries most
    of them, and ``n_examples`` rows with per-position attribution and top feature for heatmaps."""
    numbers = _number_mask(world, att, completions)
    first = world.token_to_id["0"]
    out: dict = {"hooks": {}, "examples": []}
    for h in att.hooks:
        per_pos = att.per_position(h)  # prompt pos
        top_feature = att.features[h].abs().argmax(-1)  # prompt pos
        sums = np.zeros(A.N_NUMBERS)
        counts = np.zeros(A.N_NUMBERS)
        feature_share: dict[int, float] = {}
        for i, p in enumerate(att.prompts):
            for q in numbers[i].nonzero().flatten().tolist():
                v = p[q] - first
                sums[v] += float(per_pos[i, q])
                counts[v] += 1
                f = int(top_feature[i, q])
                feature_share[f] = feature_share.get(f, 0.0) + abs(float(att.features[h][i, q, f]))
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        seen = np.nonzero(counts)[0]
        order = seen[np.argsort(-mean[seen])]
        total_share = sum(feature_share.values()) or 1.0
        out["hooks"][h] = {
            "number_positions": int(counts.sum()),
            "mean_at_numbers": float(sums.sum() / max(1, counts.sum())),
            "mean_at_other_positions": float(per_pos[~numbers & (torch.arange(per_pos.shape[1]) > 0)].sum() / len(att.prompts)),
            "top_numbers": [{"number": int(n), "mean": float(mean[n]), "count": int(counts[n])} for n in order[:n_numbers]],
            "bottom_numbers": [{"number": int(n), "mean": float(mean[n]), "count": int(counts[n])} for n in order[::-1][:n_numbers]],
            "carrying_features": [{"feature": f, "share": v / total_share}
                                  for f, v in sorted(feature_share.items(), key=lambda kv: -kv[1])[:8]],
        }
    for i, p in enumerate(att.prompts[:n_examples]):
        out["examples"].append({
            "tokens": [world.vocab[t] for t in p],
            "completion": list(completions[i]),
            "score": float(att.score[i]),
            "per_position": {h: [round(float(v), 6) for v in att.per_position(h)[i, :len(p)]] for h in att.hooks},
            "top_feature": {h: [int(v) for v in att.features[h][i, :len(p)].abs().argmax(-1)] for h in att.hooks}})
    return out


# -- dashboards ----------------------------------------------------------------------------------

@dataclass
class DashboardSpec:
    """Which features get a dashboard and how much of each it shows.

    Args:
        n_contexts: top-activating contexts per feature.
        window_before, window_after: tokens shown before and after the activating token.
        n_logits: top and bottom tokens of the decoder logit lens.
        bins: activation histogram bins.
    """

    n_contexts: int = 8
    window_before: int = 10
    window_after: int = 3
    n_logits: int = 10
    bins: int = 20


@torch.no_grad()
def dashboard_data(model, world: ToyWorld, hook: str, sae, features: Sequence[int], sequences: list[list[int]],
                   spec: DashboardSpec = DashboardSpec(), batch_size: int = 64) -> list[dict]:
    """Feature dashboards over ``sequences`` (e.g. held-out corpus documents; ``<bos>`` skipped):
    for each feature its top-activating contexts (tokens with the feature's activation), the
    histogram of its non-zero activations, its firing frequency, and the decoder direction's
    logit lens (top and bottom tokens of its direct effect on the logits)."""
    features = [int(f) for f in features]
    pad_id = world.token_to_id[PAD]
    acts, where = [], []
    from interp.instruments.features.sae import stop_layer

    stop = stop_layer(model, [hook])
    for start in range(0, len(sequences), batch_size):
        seqs = sequences[start:start + batch_size]
        tokens, mask = pad_batch(seqs, pad_id, max_len=model.cfg.n_ctx)
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=stop)
        f = sae.encode(cache[hook])[..., features]  # batch pos n_features
        keep = mask.bool()
        keep[:, 0] = False
        f = f * keep[..., None]
        acts.append(f)
        where += [(start + i, tokens.shape[1]) for i in range(len(seqs))]
    effect = A.logit_effect(model, sae.W_dec.detach()[features])  # n_features d_vocab
    out = []
    for j, f in enumerate(features):
        flat = [(float(a[i, p, j]), b0 + i, p) for b0, a in zip(range(0, len(sequences), batch_size), acts)
                for i, p in a[..., j].nonzero().tolist()]
        values = np.array([v for v, _, _ in flat])
        n_tokens = sum(len(s) - 1 for s in sequences)
        top = sorted(flat, key=lambda t: -t[0])[:spec.n_contexts]
        contexts = []
        for value, i, p in top:
            seq = sequences[i]
            lo, hi = max(1, p - spec.window_before), min(len(seq), p + spec.window_after + 1)
            batch = acts[i // batch_size]
            contexts.append({"tokens": [world.vocab[t] for t in seq[lo:hi]], "activations":
                             [round(float(batch[i % batch_size, q, j]), 4) for q in range(lo, hi)],
                             "position": p - lo, "max": round(value, 4)})
        counts, edges = np.histogram(values, bins=spec.bins) if len(values) else (np.zeros(spec.bins), np.linspace(0, 1, spec.bins + 1))
        order = torch.argsort(effect[j], descending=True)
        out.append({"hook": hook, "feature": f, "frequency": float(len(values) / max(1, n_tokens)),
                    "max_activation": float(values.max()) if len(values) else 0.0,
                    "histogram": {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]},
                    "contexts": contexts,
                    "logits_top": [{"token": world.vocab[int(t)], "effect": float(effect[j, t])} for t in order[:spec.n_logits]],
                    "logits_bottom": [{"token": world.vocab[int(t)], "effect": float(effect[j, t])} for t in order.flip(0)[:spec.n_logits]]})
    return out
