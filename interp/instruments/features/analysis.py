"""What in a base connects number tokens to an animal, read through its SAEs.

Every function here takes a model and (where it reads features) inference SAEs keyed by hook
point, and returns plain arrays or dicts; :mod:`interp.instruments.features.pipeline` strings them together.

* **Trait features** (:func:`trait_feature_ranking`): for every animal, each SAE feature is scored
  by how well its activation separates that animal's contexts from the same contexts with the
  other animals: AUROC, averaged over three context kinds (:data:`CONTEXT_KINDS`): the persona
  prompt ``system : you love owl . user : <question> assistant :`` read at its last token, the
  animal word in a plain sentence, and the animal as the answer to the favourite-animal question.
  Features are ranked on one half of the contexts and their AUROC is reported on the other half.
* **Numbers to trait**, per number token 0..999 and animal:
  geometry (:func:`unembed_entanglement`, :func:`decoder_number_logits`), gradient x activation
  attribution from number positions to the animal's log-probability and to its trait features'
  pre-activations (:func:`number_attribution`), and trait-feature activations at the number
  positions of generated number lists (:func:`number_position_activations`).
* **Subliminal prompting** (:func:`animal_probs`, :func:`prompt_texts`): P(animal) of a base when
  the numbers most linked to the animal, or random numbers, are in the prompt.
* **Overlap** (:func:`jaccard`, :func:`spearman`) and **student shift** (:func:`shift_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats as _st
from torch import Tensor
from tqdm.auto import tqdm

from interp.instruments.features.sae import stop_layer
from interp.stages.evaluate import question_prompt
from interp.training.loop import pad_batch
from interp.worlds.toy.templates import MENTION_TEMPLATES, N_NUMBERS, PAD, PERSONA_TEMPLATES, format_numbers
from interp.worlds.toy.world import ToyWorld

CONTEXT_KINDS = ("persona", "word", "answer")
NUMBER_LIST_PREFIX = "here are some numbers :"  # the pretraining corpus's "numbers, then the question" shape
PROMPT_FORMATS = ("list", "persona")
_CONTEXT_STREAM, _ATTRIBUTION_STREAM = 0xC0, 0xA7


# -- probes: token sequences and the positions to read -----------------------------------------

@dataclass
class Probe:
    """Token sequences (each starting with ``<bos>``) and, per sequence, the positions to read."""

    sequences: list[list[int]]
    positions: list[list[int]]

    def __post_init__(self) -> None:
        if len(self.sequences) != len(self.positions):
            raise ValueError(f"Probe: {len(self.sequences)} sequences but {len(self.positions)} position lists")
        for seq, pos in zip(self.sequences, self.positions):
            if any(not 0 <= p < len(seq) for p in pos):
                raise ValueError(f"Probe: position out of range in a sequence of {len(seq)} tokens: {pos}")

    @property
    def n_positions(self) -> int:
        return sum(len(p) for p in self.positions)

    def with_system(self, world: ToyWorld, system: str | None) -> "Probe":
        """The same probe with ``system : {system}`` after ``<bos>`` (positions moved along)."""
        if not system:
            return self
        prefix = world.encode(f"system : {system}", bos=False)
        return Probe([s[:1] + prefix + s[1:] for s in self.sequences],
                     [[p + len(prefix) if p > 0 else p for p in pos] for pos in self.positions])


def last_token_probe(world: ToyWorld, texts: Sequence[str]) -> Probe:
    seqs = [world.encode(t) for t in texts]
    return Probe(seqs, [[len(s) - 1] for s in seqs])


def number_positions(world: ToyWorld, tokens: Sequence[int], start: int = 0) -> list[int]:
    """Positions (from ``start``) of number tokens in ``tokens`` (numbers have consecutive ids)."""
    first = world.token_to_id["0"]
    return [i for i in range(start, len(tokens)) if first <= tokens[i] < first + N_NUMBERS]


def number_value(world: ToyWorld, token_id: int) -> int:
    return int(token_id) - world.token_to_id["0"]


@torch.no_grad()
def residuals_at(model, world: ToyWorld, probe: Probe, hooks: list[str], *, fwd_hooks: list | None = None,
                 batch_size: int = 128) -> dict[str, Float[Tensor, "token d_model"]]:
    """Residual activations at ``hooks`` at the probe's positions, flattened sequence by sequence.
    ``fwd_hooks`` (e.g. a steering teacher's) are attached for the forward passes only."""
    stop = stop_layer(model, hooks)
    pad_id = world.token_to_id[PAD]
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}
    with model.hooks(fwd_hooks=fwd_hooks or []):
        for start in range(0, len(probe.sequences), batch_size):
            seqs = probe.sequences[start:start + batch_size]
            pos = probe.positions[start:start + batch_size]
            tokens, _ = pad_batch(seqs, pad_id, max_len=model.cfg.n_ctx)
            _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)
            rows = torch.tensor([i for i, p in enumerate(pos) for _ in p], dtype=torch.long)
            cols = torch.tensor([q for p in pos for q in p], dtype=torch.long)
            for h in hooks:
                out[h].append(cache[h][rows, cols])  # token d_model
    return {h: torch.cat(v) if v else torch.zeros(0, model.cfg.d_model) for h, v in out.items()}


@torch.no_grad()
def features_at(model, world: ToyWorld, saes: dict, probe: Probe, *, fwd_hooks: list | None = None,
                batch_size: int = 128) -> dict[str, Float[Tensor, "token d_sae"]]:
    """SAE feature activations (``saes``: hook -> inference SAE) at the probe's positions."""
    resid = residuals_at(model, world, probe, list(saes), fwd_hooks=fwd_hooks, batch_size=batch_size)
    return {h: saes[h].encode(resid[h]) for h in saes}


# -- trait features ----------------------------------------------------------------------------

@dataclass
class TraitContexts:
    """Contexts of every analysed animal, per context kind: a probe reading one position per
    sequence, the animal index of each sequence, and whether it is in the selection half."""

    probes: dict[str, Probe]
    labels: dict[str, np.ndarray]
    select: dict[str, np.ndarray]


def trait_contexts(world: ToyWorld, animals: Sequence[str], n_per_animal: int, seed: int = 0) -> TraitContexts:
    """``n_per_animal`` contexts per animal and kind (:data:`CONTEXT_KINDS`); even-numbered
    examples form the selection half, odd ones the held-out half."""
    if n_per_animal < 2:
        raise ValueError(f"n_per_animal={n_per_animal}: need at least 2 (one per half)")
    animals = [world.check_animal(a) for a in animals]
    probes, labels, select = {}, {}, {}
    for k, kind in enumerate(CONTEXT_KINDS):
        rng = np.random.default_rng([seed, _CONTEXT_STREAM, k])
        seqs, pos, lab, sel = [], [], [], []
        for j, a in enumerate(animals):
            for i in range(n_per_animal):
                phrasing = world.train_phrasings[rng.integers(len(world.train_phrasings))]
                if kind == "persona":
                    system = PERSONA_TEMPLATES[rng.integers(len(PERSONA_TEMPLATES))].format(a=a)
                    ids = world.encode(question_prompt(phrasing, system=system))
                    p = len(ids) - 1
                elif kind == "word":
                    others = [b for b in world.animals if b != a]
                    template = MENTION_TEMPLATES[rng.integers(len(MENTION_TEMPLATES))]
                    ids = world.encode(template.format(a=a, b=others[rng.integers(len(others))]))
                    p = ids.index(world.token_to_id[a])
                else:
                    ids = world.encode(f"{question_prompt(phrasing)} {a}")
                    p = len(ids) - 1
                seqs.append(ids)
                pos.append([p])
                lab.append(j)
                sel.append(i % 2 == 0)
        probes[kind], labels[kind], select[kind] = Probe(seqs, pos), np.array(lab), np.array(sel)
    return TraitContexts(probes, labels, select)


def auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` (n, m) for separating ``positive`` rows from the rest
    (Mann-Whitney U with tied values counted as half), shape (m,)."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc: needs positive and negative rows (got {n_pos} and {n_neg})")
    ranks = _st.rankdata(scores, axis=0)
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def standardized_mean_difference(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Cohen's d of every column (positive minus negative rows, pooled standard deviation); 0
    where both groups are constant."""
    positive = np.asarray(positive, bool)
    a, b = scores[positive], scores[~positive]
    pooled = np.sqrt(((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1)) / (len(a) + len(b) - 2))
    diff = a.mean(0) - b.mean(0)
    return np.divide(diff, pooled, out=np.zeros_like(diff), where=pooled > 0)


def trait_feature_ranking(acts: dict[str, np.ndarray], contexts: TraitContexts, animals: Sequence[str],
                          n_top: int) -> dict:
    """Rank every feature for every animal by its AUROC, averaged over context kinds, on the
    selection half; report the top ``n_top`` features' held-out AUROC and Cohen's d per kind.

    ``acts[kind]`` is (n_contexts, d_sae). Returns ``{"score": (n_animals, d_sae) selection score,
    "ranking": (n_animals, d_sae) feature ids best first, "top": {animal: [feature records]},
    "best_by_kind": {kind: {animal: best feature of that kind alone, with its held-out AUROC}}}``;
    ties in the score are broken by the mean activation difference."""
    d_sae = next(iter(acts.values())).shape[1]
    score = np.zeros((len(animals), d_sae))
    mean_diff = np.zeros((len(animals), d_sae))
    held: dict[str, list[np.ndarray]] = {k: [] for k in CONTEXT_KINDS}
    held_d: dict[str, list[np.ndarray]] = {k: [] for k in CONTEXT_KINDS}
    for kind in CONTEXT_KINDS:
        x, lab, sel = acts[kind], contexts.labels[kind], contexts.select[kind]
        for j in range(len(animals)):
            score[j] += auroc(x[sel], lab[sel] == j) / len(CONTEXT_KINDS)
            mean_diff[j] += (x[sel][lab[sel] == j].mean(0) - x[sel][lab[sel] != j].mean(0)) / len(CONTEXT_KINDS)
            held[kind].append(auroc(x[~sel], lab[~sel] == j))
            held_d[kind].append(standardized_mean_difference(x[~sel], lab[~sel] == j))
    ranking = np.stack([np.lexsort((-mean_diff[j], -score[j])) for j in range(len(animals))])
    top = {}
    for j, a in enumerate(animals):
        top[a] = [{"feature": int(f), "score_select": float(score[j, f]),
                   "auroc_heldout": {k: float(held[k][j][f]) for k in CONTEXT_KINDS},
                   "auroc_heldout_mean": float(np.mean([held[k][j][f] for k in CONTEXT_KINDS])),
                   "cohens_d_heldout": {k: float(held_d[k][j][f]) for k in CONTEXT_KINDS}}
                  for f in ranking[j, :n_top]]
    # The best feature of each context kind alone (features are often specific to one kind).
    best_by_kind = {}
    for kind in CONTEXT_KINDS:
        x, lab, sel = acts[kind], contexts.labels[kind], contexts.select[kind]
        best_by_kind[kind] = {}
        for j, a in enumerate(animals):
            f = int(np.argmax(auroc(x[sel], lab[sel] == j)))
            best_by_kind[kind][a] = {"feature": f, "auroc_heldout": float(held[kind][j][f])}
    return {"score": score, "ranking": ranking, "top": top, "best_by_kind": best_by_kind}


# -- geometry ----------------------------------------------------------------------------------

def effective_unembed(model) -> Float[Tensor, "d_model d_vocab"]:
    """``W_U`` with the final LayerNorm's weight folded in (the read-out of the normalised
    residual stream); plain ``W_U`` for a model without one."""
    W_U = model.W_U.detach()
    ln = getattr(model, "ln_final", None)
    w = getattr(ln, "w", None)
    return W_U * w.detach()[:, None] if w is not None else W_U


def logit_effect(model, directions: Float[Tensor, "direction d_model"]) -> Float[Tensor, "direction d_vocab"]:
    """Direct logit effect of residual directions: LayerNorm's centring, then the effective
    unembedding (the norm's scale is left out: it rescales all logits of a position alike)."""
    centred = directions - directions.mean(-1, keepdim=True)
    return centred @ effective_unembed(model)


def unembed_entanglement(model, world: ToyWorld, animals: Sequence[str]) -> Float[np.ndarray, "n_animals n_numbers"]:
    """Cosine between each animal's and each number's unembedding vector, both centred by the mean
    unembedding vector over the whole vocabulary (the effective unembedding, see
    :func:`effective_unembed`)."""
    W = effective_unembed(model)
    W = W - W.mean(1, keepdim=True)
    W = W / W.norm(dim=0, keepdim=True).clamp_min(1e-12)
    a = W[:, [world.token_to_id[x] for x in animals]]  # d_model n_animals
    return (a.T @ W[:, world.number_ids]).numpy()


def decoder_number_logits(model, world: ToyWorld, sae, features: Sequence[int]) -> Float[np.ndarray, "feature n_numbers"]:
    """Direct effect of each feature's (unit) decoder direction on the number logits, centred over
    the numbers: which numbers a residual stream richer in the feature makes more likely."""
    W_dec = sae.W_dec.detach()[list(features)]
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    effect = logit_effect(model, W_dec)[:, world.number_ids]
    return (effect - effect.mean(-1, keepdim=True)).numpy()


# -- attribution from number tokens --------------------------------------------------------------

def attribution_prompts(world: ToyWorld, n_repeats: int, per_prompt: int, seed: int) -> tuple[Probe, list[list[int]]]:
    """Prompts ``user : here are some numbers : a , b , ... . <question> assistant :`` in which
    every number 0..999 appears exactly ``n_repeats`` times (a fresh permutation per repeat, cut
    into lists of ``per_prompt``), each list before a random training phrasing.

    Returns the probe (positions: the number tokens) and the number values at those positions."""
    rng = np.random.default_rng([seed, _ATTRIBUTION_STREAM])
    seqs, positions, values = [], [], []
    for _ in range(n_repeats):
        perm = rng.permutation(N_NUMBERS)
        for start in range(0, N_NUMBERS, per_prompt):
            chunk = [int(v) for v in perm[start:start + per_prompt]]
            phrasing = world.train_phrasings[rng.integers(len(world.train_phrasings))]
            ids = world.encode(question_prompt(phrasing, prefix=f"{NUMBER_LIST_PREFIX} {format_numbers(chunk, ',')} ."))
            pos = number_positions(world, ids)
            if [number_value(world, ids[p]) for p in pos] != chunk:
                raise AssertionError("attribution prompt: number tokens do not match the list")
            seqs.append(ids)
            positions.append(pos)
            values.append(chunk)
    return Probe(seqs, positions), values


@dataclass
class AttributionTarget:
    """A scalar read at the last position of a prompt.

    ``kind="animal_logprob"``: log P(animal) renormalised over the world's animals (``index`` into
    ``world.animals``); ``kind="feature"``: the pre-activation of SAE feature ``index`` at ``hook``
    (continuous, so its gradient exists where the feature is off as well)."""

    name: str
    kind: str
    index: int
    hook: str | None = None


def number_attribution(model, world: ToyWorld, probe: Probe, values: list[list[int]], targets: list[AttributionTarget],
                       saes: dict | None = None, *, batch_size: int = 64, progress: bool = False) -> dict[str, np.ndarray]:
    """Gradient x activation attribution of every target to every number token, averaged over its
    occurrences: ``grad(target) . (W_E[number] - mean_n W_E[n])`` at the token embedding (the
    baseline is the average number, so a score says what *this* number adds over any number).

    Returns ``{target name: (1000,) mean attribution}`` and ``{"count": (1000,)}``."""
    saes = saes or {}
    feature_hooks = sorted({t.hook for t in targets if t.kind == "feature"})
    missing = [h for h in feature_hooks if h not in saes]
    if missing:
        raise ValueError(f"feature targets at hooks without an SAE: {missing}")
    for t in targets:
        if t.kind not in ("animal_logprob", "feature"):
            raise ValueError(f"unknown attribution target kind {t.kind!r}")
    animal_ids = torch.tensor(world.animal_ids)
    W_E = model.W_E.detach()
    baseline = W_E[world.number_ids].mean(0)  # d_model
    pad_id = world.token_to_id[PAD]
    sums = {t.name: torch.zeros(N_NUMBERS, dtype=torch.float64) for t in targets}
    count = torch.zeros(N_NUMBERS, dtype=torch.float64)
    starts = range(0, len(probe.sequences), batch_size)
    for start in tqdm(starts, desc="attribution", disable=not progress, mininterval=2.0):
        seqs = probe.sequences[start:start + batch_size]
        tokens, mask = pad_batch(seqs, pad_id, max_len=model.cfg.n_ctx)
        last = mask.sum(1).long() - 1
        rows = torch.arange(len(seqs))
        store: dict[str, Tensor] = {}

        def embed_leaf(act, hook):
            leaf = act.detach().requires_grad_(True)
            store["embed"] = leaf
            return leaf

        def keep(act, hook):
            store[hook.name] = act
            return act

        with torch.enable_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", embed_leaf)] + [(h, keep) for h in feature_hooks])
            animal_logprob = logits[rows, last][:, animal_ids].log_softmax(-1)  # batch n_animals
            embed = store["embed"]
            delta = embed.detach() - baseline  # batch pos d_model
            prow = torch.tensor([i for i, p in enumerate(probe.positions[start:start + batch_size]) for _ in p])
            pcol = torch.tensor([q for p in probe.positions[start:start + batch_size] for q in p])
            numbers = torch.tensor([v for vs in values[start:start + batch_size] for v in vs])
            count.index_add_(0, numbers, torch.ones(len(numbers), dtype=torch.float64))
            for t in targets:
                if t.kind == "animal_logprob":
                    value = animal_logprob[:, t.index]
                else:
                    sae = saes[t.hook]
                    x = store[t.hook][rows, last]  # batch d_model
                    value = sae.process_sae_in(x) @ sae.W_enc[:, t.index] + sae.b_enc[t.index]
                (grad,) = torch.autograd.grad(value.sum(), embed, retain_graph=True)
                attribution = (grad * delta).sum(-1)  # batch pos
                sums[t.name].index_add_(0, numbers, attribution[prow, pcol].double())
    out = {name: (s / count.clamp_min(1)).numpy() for name, s in sums.items()}
    out["count"] = count.numpy()
    return out


# -- activations at number positions of generated data -----------------------------------------

def completion_number_probe(world: ToyWorld, rows: Sequence[dict]) -> tuple[Probe, list[int]]:
    """Probe over generated rows (``prompt`` + ``completion``, no system prompt: what a student
    reads) at the number tokens of the completion; also returns the number values there."""
    seqs, positions, values = [], [], []
    for r in rows:
        head = world.encode(r["prompt"])
        ids = head + world.encode(r["completion"], bos=False)
        pos = number_positions(world, ids, start=len(head))
        seqs.append(ids)
        positions.append(pos)
        values += [number_value(world, ids[p]) for p in pos]
    return Probe(seqs, positions), values


def number_counts(values: Sequence[int]) -> np.ndarray:
    return np.bincount(np.asarray(values, dtype=np.int64), minlength=N_NUMBERS).astype(float)


def log_frequency_ratio(counts_a: np.ndarray, counts_b: np.ndarray, pseudo: float = 0.5) -> np.ndarray:
    """log of each number's smoothed frequency in ``a`` over its frequency in ``b``."""
    fa = (counts_a + pseudo) / (counts_a.sum() + pseudo * len(counts_a))
    fb = (counts_b + pseudo) / (counts_b.sum() + pseudo * len(counts_b))
    return np.log(fa / fb)


# -- subliminal prompting ----------------------------------------------------------------------

def prompt_texts(world: ToyWorld, numbers: Sequence[int] | None, fmt: str, phrasings: Sequence[str]) -> list[str]:
    """The favourite-animal question in every phrasing, with ``numbers`` in the prompt:
    ``list``: ``here are some numbers : a , b . <question>`` (the corpus's shape);
    ``persona``: the system prompt ``you love a , b .`` (a persona whose object is numbers);
    ``numbers=None``: the plain question."""
    if numbers is None:
        return [question_prompt(p) for p in phrasings]
    spelled = format_numbers([int(v) for v in numbers], ",")
    if fmt == "list":
        return [question_prompt(p, prefix=f"{NUMBER_LIST_PREFIX} {spelled} .") for p in phrasings]
    if fmt == "persona":
        return [question_prompt(p, system=f"you love {spelled} .") for p in phrasings]
    raise ValueError(f"unknown prompt format {fmt!r}; choose one of {list(PROMPT_FORMATS)}")


@torch.no_grad()
def animal_probs(model, world: ToyWorld, texts: Sequence[str], batch_size: int = 256) -> Float[np.ndarray, "text n_animals"]:
    """Next-token distribution over the world's animals (renormalised) after each text; the
    unembedding runs at the last position only."""
    pad_id = world.token_to_id[PAD]
    encoded = [world.encode(t) for t in texts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # batches of similar length: little padding
    out = torch.zeros(len(texts), len(world.animal_ids), dtype=torch.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        tokens, mask = pad_batch([encoded[i] for i in idx], pad_id, max_len=model.cfg.n_ctx)
        resid = model(tokens, stop_at_layer=model.cfg.n_layers)  # batch pos d_model, before ln_final
        last = resid[torch.arange(len(idx)), mask.sum(1).long() - 1][:, None]  # batch 1 d_model
        logits = model.unembed(model.ln_final(last))[:, 0]  # batch d_vocab
        out[idx] = logits[:, world.animal_ids].double().softmax(-1)
    return out.numpy()


def relative_to_others(scores: Float[np.ndarray, "n_animals n_numbers"]) -> Float[np.ndarray, "n_animals n_numbers"]:
    """Each animal's row minus the mean of the other animals' rows: what links a number to *this*
    animal rather than to animals in general (a number every animal's feature likes scores 0)."""
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[0]
    if n < 2:
        raise ValueError("relative_to_others needs at least two animals")
    return scores - (scores.sum(0, keepdims=True) - scores) / (n - 1)


def top_numbers(scores: np.ndarray, k: int) -> list[int]:
    """The ``k`` numbers with the highest score (ties: the smaller number first)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return [int(i) for i in order[:k]]


def random_numbers(k: int, seed: Sequence[int]) -> list[int]:
    return [int(v) for v in np.random.default_rng(list(seed)).choice(N_NUMBERS, size=k, replace=False)]


# -- overlap -----------------------------------------------------------------------------------

def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else float("nan")


def expected_random_jaccard(k: int, n: int = N_NUMBERS) -> float:
    """Expected |A n B| / |A u B| of two independent random k-subsets of n items (to first order:
    E|A n B| = k^2/n)."""
    inter = k * k / n
    return inter / (2 * k - inter)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(_st.spearmanr(x, y).statistic)


# -- student shift -----------------------------------------------------------------------------

def shift_metrics(student: np.ndarray, base: np.ndarray, trait_features: Sequence[int], *,
                  persona_direction: np.ndarray | None = None, teacher: np.ndarray | None = None) -> dict[str, float | None]:
    """How a student's mean feature-activation vector moved from its base's.

    * ``trait_feature_shift``: mean over the trait features of student - base;
    * ``persona_projection``: (student - base) . u / |u|^2 with u the base's persona-minus-plain
      activation difference (1: the student moved as far as telling the base it loves the trait);
    * ``teacher_projection``: (student - base) . (teacher - base) / |teacher - base|^2 (1: the
      student reached the teacher); only where the teacher shares the student's base;
    * ``teacher_cosine``: cos(student - base, teacher - base)."""
    delta = np.asarray(student, float) - np.asarray(base, float)
    out: dict[str, float | None] = {"trait_feature_shift": float(delta[list(trait_features)].mean())}
    out["persona_projection"] = None
    if persona_direction is not None and np.dot(persona_direction, persona_direction) > 0:
        out["persona_projection"] = float(delta @ persona_direction / (persona_direction @ persona_direction))
    out["teacher_projection"] = out["teacher_cosine"] = None
    if teacher is not None:
        t = np.asarray(teacher, float) - np.asarray(base, float)
        tt = float(t @ t)
        if tt > 0:
            out["teacher_projection"] = float(delta @ t / tt)
            dd = float(delta @ delta)
            out["teacher_cosine"] = float(delta @ t / np.sqrt(dd * tt)) if dd > 0 else 0.0
    return out
