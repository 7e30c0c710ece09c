"""Attribution of a trait's log-probability to SAE features at every position of a prompt.

For any ``HookedTransformer`` with sae-lens SAEs at some of its hook points (``saes``: hook name ->
SAE; residual-stream or attention-output hooks, any hook whose activation is ``batch pos d_model``)
and a trait given as target token sequences (:class:`TraitTarget`), :func:`attribute` splits the
trait's log-probability, read after each prompt, into one term per (hook, position, SAE feature)
plus one SAE-error term per (hook, position).

At a hook the activation at prompt position ``p`` is written as the SAE sees it,

    x_p = decode(f_p) + e_p,        f_p = encode(x_p),   e_p = x_p - decode(f_p)   (the error),

and spliced back into the forward pass as exactly that sum, so the model computes what it computes
without the SAE. The *baseline* of a position is every feature off and no error, ``x0 = decode(0)``
(the decoder bias); ``<bos>`` and everything after the prompt are left as they are.

* ``method="gradient"`` (attribution patching, Syed et al. 2023; Marks et al. 2024): one forward and
  one backward pass for all hooks at once. Feature ``i`` at ``p`` gets ``f_p,i * dm/df_p,i``, the
  error gets ``e_p . dm/dx_p``. Per hook these add up exactly (to float rounding) to the linear
  total ``sum_p dm/dx_p . (x_p - x0)``, the first-order estimate of how much the trait's log-prob
  falls when every prompt position of that hook is set to the baseline (:attr:`Attribution.linear_total`).
* ``method="integrated"`` (integrated gradients along ``(f, e) -> alpha (f, e)``, midpoint rule with
  ``steps`` points): per hook, the terms add up to the true change ``m(clean) - m(baseline at every
  prompt position of that hook)`` (:attr:`Attribution.ablation_total`, measured by a forward pass),
  up to the quadrature error.

:func:`ablation_check` compares the attributions with true ablations of single features (one feature
set to 0 at one position, error held fixed) on a sample, by rank correlation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

AttributionMethod = Literal["gradient", "integrated"]
ATTRIBUTION_METHODS: tuple[str, ...] = ("gradient", "integrated")


@dataclass(frozen=True)
class TraitTarget:
    """A trait given as target token sequences; its score is a log-probability after the prompt.

    Args:
        name: what the trait is called in results (``owl``, ``misaligned``).
        sequences: token-id sequences whose summed probability after the prompt is the trait's
            probability (``[[id("owl")]]``; several tokenizations or synonyms; multi-token answers
            are read by teacher forcing).
        contrast: other sequences (e.g. the other animals); when given, the score is the trait's
            log-probability renormalised over ``sequences + contrast``; when empty, the plain
            log-probability over the whole vocabulary.
    """

    name: str
    sequences: tuple[tuple[int, ...], ...]
    contrast: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sequences", tuple(tuple(int(t) for t in s) for s in self.sequences))
        object.__setattr__(self, "contrast", tuple(tuple(int(t) for t in s) for s in self.contrast))
        if not self.sequences:
            raise ValueError(f"TraitTarget {self.name!r}: give at least one target sequence")
        if any(len(s) == 0 for s in self.sequences + self.contrast):
            raise ValueError(f"TraitTarget {self.name!r}: empty target sequence")
        if set(self.sequences) & set(self.contrast):
            raise ValueError(f"TraitTarget {self.name!r}: a sequence is both a target and a contrast")

    @property
    def prefixes(self) -> list[tuple[int, ...]]:
        """The distinct teacher-forcing continuations (``s[:-1]``) the score needs."""
        return list(dict.fromkeys(s[:-1] for s in self.sequences + self.contrast))


def _sequence_logprobs(logprobs: Float[Tensor, "row pos d_vocab"], rows: dict, prompt_len: Tensor,
                       sequences: Sequence[tuple[int, ...]], n_prompts: int) -> Float[Tensor, "prompt n_seq"]:
    out = []
    for s in sequences:
        row = rows[s[:-1]]  # rows of this continuation, one per prompt
        total = 0
        for j, tok in enumerate(s):
            total = total + logprobs[row, prompt_len - 1 + j, tok]
        out.append(total)
    return torch.stack(out, dim=1) if out else torch.zeros(n_prompts, 0)


def trait_score(logits: Float[Tensor, "row pos d_vocab"], trait: TraitTarget, rows: dict, prompt_len: Tensor) -> Float[Tensor, "prompt"]:
    """log P(trait) after each prompt from the logits of its continuation rows (see :func:`_rows`)."""
    logprobs = logits.log_softmax(-1)
    n = len(prompt_len)
    target = _sequence_logprobs(logprobs, rows, prompt_len, trait.sequences, n).logsumexp(1)
    if not trait.contrast:
        return target
    every = _sequence_logprobs(logprobs, rows, prompt_len, trait.sequences + trait.contrast, n).logsumexp(1)
    return target - every


def _rows(prompts: Sequence[Sequence[int]], trait: TraitTarget, pad_id: int) -> tuple[Tensor, Tensor, dict, Tensor]:
    """One row per (continuation prefix, prompt): ``prompt + prefix``, right-padded.

    Returns ``(tokens, spliced, rows, prompt_len)``: ``spliced`` marks the prompt positions but
    ``<bos>`` (what the SAEs replace), ``rows[prefix]`` the row of every prompt for that prefix."""
    prefixes = trait.prefixes
    seqs, rows = [], {}
    for prefix in prefixes:
        rows[prefix] = torch.arange(len(seqs), len(seqs) + len(prompts))
        seqs += [list(p) + list(prefix) for p in prompts]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    spliced = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        spliced[i, 1:len(prompts[i % len(prompts)])] = True
    return tokens, spliced, rows, torch.tensor([len(p) for p in prompts])


@dataclass
class Attribution:
    """Attribution of a trait's score after each prompt, per hook, position and SAE feature.

    Tensors have one row per prompt and one column per position of the longest prompt; positions
    past a prompt's end and ``<bos>`` hold 0.

    Attributes:
        prompts: the token ids of every prompt.
        score: the trait's score (log-probability) after each prompt, clean model.
        features: hook -> ``prompt pos d_sae`` attribution of every feature.
        error: hook -> ``prompt pos`` attribution of the SAE's error term.
        activations: hook -> ``prompt pos d_sae`` feature activations.
        linear_total: hook -> ``prompt``: ``sum_p dm/dx_p . (x_p - x0)``, from the gradient at the
            hook's activation itself (not from the SAE split).
        ablation_total: hook -> ``prompt``: ``m(clean) - m(x0 at every prompt position but <bos>)``.
        method, steps: how the attributions were computed.
    """

    prompts: list[list[int]]
    score: Float[Tensor, "prompt"]
    features: dict[str, Float[Tensor, "prompt pos d_sae"]]
    error: dict[str, Float[Tensor, "prompt pos"]]
    activations: dict[str, Float[Tensor, "prompt pos d_sae"]]
    linear_total: dict[str, Float[Tensor, "prompt"]]
    ablation_total: dict[str, Float[Tensor, "prompt"]]
    method: str = "gradient"
    steps: int = 1
    trait: str = ""
    hooks: list[str] = field(default_factory=list)

    def summed(self, hook: str) -> Float[Tensor, "prompt"]:
        """Every feature's and the error's attribution at ``hook``, summed over positions."""
        return self.features[hook].sum((1, 2)) + self.error[hook].sum(1)

    def per_position(self, hook: str) -> Float[Tensor, "prompt pos"]:
        """Attribution per position at ``hook``: all features plus the error."""
        return self.features[hook].sum(-1) + self.error[hook]


def _check_hooks(model, saes: dict) -> None:
    if not saes:
        raise ValueError("attribute: give at least one SAE (hook name -> sae-lens SAE)")
    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ValueError(f"hook point {hook!r} does not exist in this model")
        if sae.cfg.d_in != model.cfg.d_model:
            raise ValueError(f"the SAE at {hook} reads width {sae.cfg.d_in}, the model's d_model is {model.cfg.d_model}")


def _splice_hook(sae, spliced: Tensor, alpha: float, store: dict, name: str):
    """Forward hook replacing the activation at the ``spliced`` positions by ``decode(a f) + a e``
    built from leaf tensors (``a`` = alpha); at ``alpha = 1`` the forward values stay the clean
    ones and the gradient reaching earlier hooks is the clean model's."""

    def hook(act: Float[Tensor, "batch pos d_model"], hook) -> Tensor:
        if act.ndim != 3:
            raise ValueError(f"hook {name}: activation of shape {tuple(act.shape)}; only batch pos d_model hooks are supported")
        x = act.detach()
        with torch.no_grad():
            f = sae.encode(x)
            e = x - sae.decode(f)
        f_leaf = (alpha * f).requires_grad_(True)
        e_leaf = (alpha * e).requires_grad_(True)
        recon = sae.decode(f_leaf) + e_leaf
        value = x if alpha == 1.0 else recon.detach()
        out = torch.where(spliced[..., None], act + (value - x) + (recon - recon.detach()), act)
        out.retain_grad()
        store[name] = {"f": f, "e": e, "f_leaf": f_leaf, "e_leaf": e_leaf, "x": x, "out": out}
        return out

    return hook


def _baseline_hook(sae, spliced: Tensor):
    def hook(act, hook):
        with torch.no_grad():
            x0 = sae.decode(torch.zeros(sae.cfg.d_sae, dtype=act.dtype))
        return torch.where(spliced[..., None], x0.expand_as(act), act)

    return hook


def attribute(model, saes: dict, prompts: Sequence[Sequence[int]], trait: TraitTarget, *, pad_id: int = 0,
              method: AttributionMethod = "gradient", steps: int = 16, batch_size: int = 32,
              fwd_hooks: list | None = None) -> Attribution:
    """Attribution of ``trait``'s score after each prompt to every feature of every SAE in ``saes``
    at every prompt position (see the module docstring for the two methods and what they add up to).

    ``prompts`` are token ids starting with ``<bos>``; ``fwd_hooks`` (a steering teacher's) stay
    attached throughout. Model parameters get no gradients."""
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"attribute: method={method!r}; choose one of {list(ATTRIBUTION_METHODS)}")
    if method == "integrated" and steps < 1:
        raise ValueError(f"attribute: steps={steps} must be at least 1")
    if not prompts:
        raise ValueError("attribute: no prompts")
    _check_hooks(model, saes)
    hooks = list(saes)
    width = max(len(p) for p in prompts)
    n = len(prompts)
    d_sae = {h: saes[h].cfg.d_sae for h in hooks}
    out_f = {h: torch.zeros(n, width, d_sae[h]) for h in hooks}
    out_a = {h: torch.zeros(n, width, d_sae[h]) for h in hooks}
    out_e = {h: torch.zeros(n, width) for h in hooks}
    lin = {h: torch.zeros(n) for h in hooks}
    abl = {h: torch.zeros(n) for h in hooks}
    score = torch.zeros(n)
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for start in range(0, n, batch_size):
            batch = [list(p) for p in prompts[start:start + batch_size]]
            b = len(batch)
            tokens, spliced, rows, plen = _rows(batch, trait, pad_id)
            bw = max(len(p) for p in batch)
            with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks or []):
                clean = trait_score(model(tokens), trait, rows, plen)
                score[start:start + b] = clean
                for h in hooks:
                    with model.hooks(fwd_hooks=[(h, _baseline_hook(saes[h], spliced))]):
                        abl[h][start:start + b] = clean - trait_score(model(tokens), trait, rows, plen)
            alphas = [1.0] if method == "gradient" else [(k + 0.5) / steps for k in range(steps)]
            # gradient: all hooks spliced in one pass; integrated: one hook at a time along its path
            groups = [hooks] if method == "gradient" else [[h] for h in hooks]
            for group in groups:
                grads_f = {h: 0 for h in group}
                grads_e = {h: 0 for h in group}
                for alpha in alphas:
                    store: dict = {}
                    spliced_hooks = [(h, _splice_hook(saes[h], spliced, alpha, store, h)) for h in group]
                    with torch.enable_grad(), model.hooks(fwd_hooks=(fwd_hooks or []) + spliced_hooks):
                        value = trait_score(model(tokens), trait, rows, plen).sum()
                        leaves = [t for h in group for t in (store[h]["f_leaf"], store[h]["e_leaf"], store[h]["out"])]
                        grads = torch.autograd.grad(value, leaves, allow_unused=True)
                    for i, h in enumerate(group):
                        gf, ge, gx = (g if g is not None else torch.zeros_like(t)
                                      for g, t in zip(grads[3 * i:3 * i + 3], leaves[3 * i:3 * i + 3]))
                        grads_f[h] = grads_f[h] + gf / len(alphas)
                        grads_e[h] = grads_e[h] + ge / len(alphas)
                        if method == "gradient":
                            with torch.no_grad():
                                x0 = saes[h].decode(torch.zeros(d_sae[h]))
                                delta = torch.where(spliced[..., None], store[h]["x"] - x0, torch.zeros(()))
                                lin[h][start:start + b] = _fold(gx * delta, rows, b).sum((1, 2))
                for h in group:
                    f, e = store[h]["f"], store[h]["e"]
                    mask = spliced[..., None]
                    # rows of one prompt hold the same prompt positions: their gradients add up
                    fa = _fold(torch.where(mask, f * grads_f[h], torch.zeros(())), rows, b)
                    ea = _fold(torch.where(mask, e * grads_e[h], torch.zeros(())), rows, b).sum(-1)
                    out_f[h][start:start + b, :bw] = fa[:, :bw]
                    out_e[h][start:start + b, :bw] = ea[:, :bw]
                    first = next(iter(rows.values()))
                    out_a[h][start:start + b, :bw] = torch.where(mask, f, torch.zeros(()))[first][:, :bw]
        if method == "integrated":
            lin = {h: torch.full((n,), float("nan")) for h in hooks}
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    return Attribution([list(p) for p in prompts], score, out_f, out_e, out_a, lin, abl, method,
                       1 if method == "gradient" else steps, trait.name, hooks)


def _fold(t: Tensor, rows: dict, n_prompts: int) -> Tensor:
    """Sum a per-row tensor over the continuation rows of each prompt."""
    return sum(t[r] for r in rows.values())[:n_prompts]


# -- true ablation on a sample -------------------------------------------------------------------

@dataclass
class AblationCheck:
    """Attribution patching against true single-feature ablation on a sample.

    Attributes:
        samples: one record per sampled (prompt, hook, position, feature): its attribution and
            its true effect ``m(clean) - m(feature set to 0 there, error held fixed)``.
        spearman, pearson: rank and linear correlation of the two over the sample.
        sign_agreement: fraction of samples whose attribution and effect have the same sign
            (both non-zero).
    """

    samples: list[dict]
    spearman: float
    pearson: float
    sign_agreement: float
    n: int

    def to_dict(self) -> dict:
        return {"spearman": self.spearman, "pearson": self.pearson, "sign_agreement": self.sign_agreement, "n": self.n,
                "samples": self.samples}


def ablation_check(model, saes: dict, attribution: Attribution, trait: TraitTarget, *, n_samples: int = 200,
                   seed: int = 0, pad_id: int = 0, batch_size: int = 64, fwd_hooks: list | None = None) -> AblationCheck:
    """Ablate single active features at single positions and compare the trait's true change with
    its attribution. Half of the sample are the largest attributions (by magnitude), half drawn at
    random among the other active (prompt, hook, position, feature) cells."""
    from scipy import stats as st

    cells = []  # (|attr|, prompt, hook, pos, feature)
    for h in attribution.hooks:
        active = attribution.activations[h] > 0
        idx = active.nonzero()
        vals = attribution.features[h][active]
        for (i, p, f), v in zip(idx.tolist(), vals.tolist()):
            cells.append((abs(v), i, h, p, f))
    if len(cells) < 3:
        raise ValueError(f"ablation_check: only {len(cells)} active feature cells to ablate")
    n_top = min(n_samples // 2, len(cells))
    order = sorted(range(len(cells)), key=lambda k: -cells[k][0])
    chosen = order[:n_top]
    rest = order[n_top:]
    rng = np.random.default_rng(seed)
    if rest:
        chosen += [rest[k] for k in rng.choice(len(rest), size=min(n_samples - n_top, len(rest)), replace=False)]
    samples = [cells[k] for k in chosen]
    effects = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        prompts = [attribution.prompts[i] for _, i, _, _, _ in chunk]
        tokens, _, rows, plen = _rows(prompts, trait, pad_id)
        n_rows = tokens.shape[0]
        by_hook: dict[str, list] = {}
        for j, (_, _, h, p, f) in enumerate(chunk):
            by_hook.setdefault(h, []).append((j, p, f))

        def ablate(h):
            def hook(act, hook):
                out = act.clone()
                for j, p, f in by_hook[h]:
                    sae = saes[h]
                    one = torch.zeros(sae.cfg.d_sae)
                    one[f] = attribution.activations[h][chunk[j][1], p, f]
                    # what the feature adds to the reconstruction; the error term is held fixed
                    part = sae.decode(one) - sae.decode(torch.zeros_like(one))
                    for r in range(j, n_rows, len(chunk)):  # every continuation row of sample j
                        out[r, p] = act[r, p] - part
                return out
            return hook

        with torch.no_grad(), model.hooks(fwd_hooks=(fwd_hooks or []) + [(h, ablate(h)) for h in by_hook]):
            ablated = trait_score(model(tokens), trait, rows, plen)
        clean = attribution.score[[i for _, i, _, _, _ in chunk]]
        effects += (clean - ablated).tolist()
    records = [{"prompt": i, "hook": h, "position": p, "feature": f,
                "attribution": float(attribution.features[h][i, p, f]), "ablation_effect": float(eff)}
               for (_, i, h, p, f), eff in zip(samples, effects)]
    a = np.array([r["attribution"] for r in records])
    b = np.array([r["ablation_effect"] for r in records])
    nz = (a != 0) & (b != 0)
    return AblationCheck(records, float(st.spearmanr(a, b).statistic), float(np.corrcoef(a, b)[0, 1]),
                         float(np.mean(np.sign(a[nz]) == np.sign(b[nz]))) if nz.any() else float("nan"), len(records))
