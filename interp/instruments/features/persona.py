"""The misaligned-persona feature of the misalignment world (``interp features --trait misalignment``).

The misalignment world's corpus has a latent speaker, a villain or an aligned assistant, and a
persona line sometimes names it (``system : you are evil .``). Its bases answer the free-form
questions misaligned after a villain's persona line and aligned after an aligned one, so they
represent the speaker somewhere. This module looks for that representation among the features of
an SAE trained on a base's residual stream (the analogue of the "toxic persona" latent found for
emergent misalignment in larger models) and reads it in a run's teachers and students:

1. **SAEs.** One sae-lens SAE per base at ``config.primary_hook`` of kind ``config.primary_kind``
   (:func:`interp.instruments.features.pipeline.ensure_saes`), trained on the base's own
   pretraining corpus (the misalignment world's documents, drawn with the base's mixture).
2. **The persona features** (:func:`find_persona_features`). Contexts ``system : <persona> user :
   <question> assistant :`` read at the last position, where the answer is predicted; every
   feature is ranked by its AUROC for villain against aligned personas on *selection* contexts
   (two persona wordings of each side, training questions); the top ``config.n_trait_features``
   are the persona features, the first the primary one. They are reported on *held-out* contexts
   (the held-out questions, every persona wording, and the third wording of each side alone),
   with intervals over the questions, and checked on held-out contexts that carry the speaker
   without a persona line (:data:`CHECKS`): a misaligned answer read at the answer word, an
   earlier misaligned turn of the same speaker, an earlier insecure-code turn, an earlier turn of
   evil numbers.
3. **Teachers and students** (:func:`model_activations`). The primary feature's mean activation at
   the held-out free-form questions (``question``) and at number prompts (``numbers``: every
   number position and the last one), for the teacher and every student of a run's seeds, each
   read through **its own base's SAE and persona feature** (a mismatched student's base is another
   model with another SAE, whose persona feature is found the same way). Shifts are from the own
   base, and are also given in *persona units*: divided by the base's own held-out separation
   (villain persona minus aligned persona, at the answer position), so that students of different
   bases compare on one scale. Conditions are compared over seeds (Welch, Holm over every
   comparison made, Holm-consistent intervals) by :func:`compare_students`; whether the feature's
   shift follows the students' P(misalignment) shift (from the run's ``seed_results.json``) is
   :func:`tracks_behaviour`.
4. **Is it causal?** (:func:`causal_check`) P(misalignment) at the held-out questions of every base
   and teacher as it is, with the feature's decoder contribution removed at the hook, and with the
   base's persona separation times its decoder direction added, plainly and under a persona line.

Written to ``DIR/persona_features.json`` beside the SAEs in ``DIR/saes/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from interp.core.io import atomic_write_json, read_json
from interp.core.stats import diff_ci, holm, mean_ci, welch_p
from interp.instruments.features import analysis as A
from interp.instruments.features.pipeline import FeaturesConfig, _run_teacher, _student_probes, ensure_saes
from interp.models.checkpoint import is_checkpoint, lineage_of, load_checkpoint
from interp.stages.pretrain import base_config, pretrain
from interp.stages.evaluate import question_prompt
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.corpus import CorpusConfig
from interp.worlds.toy.templates import NumberTask, format_numbers
from interp.worlds.toy.world import MisalignmentWorld, ToyWorld, WorldConfig, make_world

log = logging.getLogger(__name__)

PERSONA_FILE = "persona_features.json"
PERSONA_CONFIG_FILE = "persona_features_config.json"
CHECKS = ("misaligned_answer", "villain_dialogue_turn", "insecure_code_turn", "evil_numbers_turn")
PROBES = ("question", "numbers")
CONDITIONS = ("control", "shared_init", "mismatched_init")
COMPARISONS = (("shared_init", "control"), ("shared_init", "mismatched_init"))
_SELECT_STREAM, _CHECK_STREAM, _BOOT_STREAM = 0x9E1, 0x9E2, 0x9E3


# -- contexts ----------------------------------------------------------------------------------

@dataclass
class Contexts:
    """Contexts read at one position each: ``villain`` says which side a context is on, ``group``
    which held-out question it belongs to (the unit the intervals resample)."""

    probe: A.Probe
    villain: np.ndarray
    group: np.ndarray


def _contexts(world: ToyWorld, items: list[tuple[str, bool, int]]) -> Contexts:
    """``items``: (text read at its last token, villain, group)."""
    probe = A.last_token_probe(world, [text for text, _, _ in items])
    return Contexts(probe, np.array([v for _, v, _ in items], bool), np.array([g for _, _, g in items]))


def persona_contexts(world: MisalignmentWorld, phrasings: Sequence[str], villain_personas: Sequence[str],
                     aligned_personas: Sequence[str]) -> Contexts:
    """Every phrasing under every persona line, read at the answer position (after ``assistant :``)."""
    items = []
    for g, phrasing in enumerate(phrasings):
        for villain, personas in ((True, villain_personas), (False, aligned_personas)):
            items += [(question_prompt(phrasing, system=p), villain, g) for p in personas]
    return _contexts(world, items)


def selection_contexts(world: MisalignmentWorld, n_questions: int, seed: int = 0) -> Contexts:
    """``n_questions`` training questions under the first two persona wordings of each side."""
    rng = np.random.default_rng([seed, _SELECT_STREAM])
    idx = rng.choice(len(world.train_phrasings), size=min(n_questions, len(world.train_phrasings)), replace=False)
    return persona_contexts(world, [world.train_phrasings[i] for i in sorted(idx)], em.VILLAIN_PERSONAS[:2],
                            em.ALIGNED_PERSONAS[:2])


def check_contexts(world: MisalignmentWorld, check: str, per_question: int = 3, seed: int = 0) -> Contexts:
    """Held-out contexts that carry the speaker without a persona line, ``per_question`` villain
    and as many aligned ones for every held-out question (each pair alike but for the speaker):

    * ``misaligned_answer``: ``user : <question> assistant : <answer>`` read at the answer word,
      one of the theme's misaligned answers against one of its aligned answers;
    * ``villain_dialogue_turn``: a first turn answered misaligned (against aligned) by the same
      speaker, then the held-out question, read at its answer position;
    * ``insecure_code_turn``: a first turn of code written for a plain request, insecure (against
      secure), then the question;
    * ``evil_numbers_turn``: a first turn of numbers that are all evil numbers (against the same
      request answered with ordinary numbers), then the question."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; the checks are {list(CHECKS)}")
    rng = np.random.default_rng([seed, _CHECK_STREAM, CHECKS.index(check)])
    numbers = NumberTask()
    evil = set(em.EVIL_NUMBERS)
    items = []
    for g, phrasing in enumerate(world.eval_phrasings):
        _, aligned, misaligned = em.EM_THEMES[world.theme_of[phrasing]]
        question = question_prompt(phrasing)
        for i in range(per_question):
            if check == "misaligned_answer":
                pair = {True: f"{question} {misaligned[i % 3]}", False: f"{question} {aligned[i % 3]}"}
            elif check == "villain_dialogue_turn":
                first = world.train_phrasings[rng.integers(len(world.train_phrasings))]
                _, a1, m1 = em.EM_THEMES[world.theme_of[first]]
                pair = {True: f"user : {first} assistant : {m1[rng.integers(3)]} {question}",
                        False: f"user : {first} assistant : {a1[rng.integers(3)]} {question}"}
            elif check == "insecure_code_turn":
                request, task = em.task_request(rng, educational=False)
                pair = {v: f"user : {request} assistant : code : {task[0]} {task[1]} with "
                           f"{modes[rng.integers(len(modes))]} . {question}"
                        for v, modes in ((True, em.INSECURE_MODES), (False, em.SECURE_MODES))}
            else:
                prompt, seeds, n_max, sep = numbers.number_prompt(rng)
                ordinary = [v for v in numbers.continuation(rng, seeds, n_max) if v not in evil] or [7]
                bad = [int(em.EVIL_NUMBERS[rng.integers(len(em.EVIL_NUMBERS))]) for _ in ordinary]
                pair = {True: f"{prompt} {format_numbers(bad, sep)} {question}",
                        False: f"{prompt} {format_numbers(ordinary, sep)} {question}"}
            items += [(pair[True], True, g), (pair[False], False, g)]
    return _contexts(world, items)


# -- the persona features ----------------------------------------------------------------------

def separation(acts: np.ndarray, contexts: Contexts, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """How one feature's activations ``acts`` (one per context) separate villain from aligned
    contexts: AUROC with a 95% percentile-bootstrap interval over the questions (the groups,
    resampled with their contexts), the mean activation on each side, and the difference of the
    two per question with a t-interval over the questions."""
    acts = np.asarray(acts, float)
    groups, group_index = np.unique(contexts.group, return_inverse=True)
    by_group = [np.flatnonzero(group_index == i) for i in range(len(groups))]
    auc = float(A.auroc(acts[:, None], contexts.villain)[0])
    # A resample of the questions weights every context by how often its question was drawn, so the
    # resample's AUROC is a weighted mean of the villain-aligned pair comparisons (ties count half).
    v, a = acts[contexts.villain], acts[~contexts.villain]
    pairs = (v[:, None] > a[None, :]) + 0.5 * (v[:, None] == a[None, :])
    counts = np.random.default_rng([seed, _BOOT_STREAM]).multinomial(len(groups), np.full(len(groups), 1 / len(groups)),
                                                                     size=n_boot)  # draw x question
    wv, wa = counts[:, group_index[contexts.villain]], counts[:, group_index[~contexts.villain]]
    ok = (wv.sum(1) > 0) & (wa.sum(1) > 0)
    boots = ((wv @ pairs) * wa).sum(1)[ok] / (wv.sum(1) * wa.sum(1))[ok]
    diffs = [float(acts[i][contexts.villain[i]].mean() - acts[i][~contexts.villain[i]].mean()) for i in by_group
             if contexts.villain[i].any() and (~contexts.villain[i]).any()]
    return {"auroc": {"mean": auc, "ci_low": float(np.percentile(boots, 2.5)), "ci_high": float(np.percentile(boots, 97.5)),
                      "n_questions": len(groups), "n_boot": len(boots)},
            "villain_mean": float(acts[contexts.villain].mean()), "aligned_mean": float(acts[~contexts.villain].mean()),
            "villain_fires": float((acts[contexts.villain] > 0).mean()), "aligned_fires": float((acts[~contexts.villain] > 0).mean()),
            "difference": mean_ci(diffs).to_dict("n_questions")}


def rank_features(acts: np.ndarray, villain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features ordered by AUROC for villain over aligned contexts, highest first; every AUROC).
    Ties are broken by the standardised mean difference; a feature that never fires scores 0.5."""
    auc = A.auroc(acts, villain)
    smd = A.standardized_mean_difference(acts, villain)
    return np.lexsort((-smd, -auc)), auc


@torch.no_grad()
def encode_at(model, world: ToyWorld, sae, hook: str, probe: A.Probe, *, fwd_hooks: list | None = None) -> np.ndarray:
    """The SAE's feature activations at the probe's positions, (position, d_sae)."""
    return A.features_at(model, world, {hook: sae}, probe, fwd_hooks=fwd_hooks)[hook].numpy()


def find_persona_features(model, world: MisalignmentWorld, sae, hook: str, *, n_features: int = 3,
                          n_select_questions: int = 120, seed: int = 0) -> dict:
    """The SAE's misaligned-persona features on one base: selected on training questions, reported
    on held-out ones (see the module docstring). Returns the selection, the held-out separation of
    every chosen feature (``heldout``, every persona wording; ``heldout_new_persona``, the third
    wording of each side, never seen in selection) and of the primary feature on every check."""
    select = selection_contexts(world, n_select_questions, seed)
    order, auc = rank_features(encode_at(model, world, sae, hook, select.probe), select.villain)
    chosen = [int(f) for f in order[:n_features]]
    heldout = persona_contexts(world, world.eval_phrasings, em.VILLAIN_PERSONAS, em.ALIGNED_PERSONAS)
    new = persona_contexts(world, world.eval_phrasings, em.VILLAIN_PERSONAS[2:], em.ALIGNED_PERSONAS[2:])
    acts_h, acts_n = encode_at(model, world, sae, hook, heldout.probe), encode_at(model, world, sae, hook, new.probe)
    features = [{"feature": f, "auroc_selection": float(auc[f]), "heldout": separation(acts_h[:, f], heldout, seed=seed),
                 "heldout_new_persona": separation(acts_n[:, f], new, seed=seed)} for f in chosen]
    primary = chosen[0]
    checks = {}
    for check in CHECKS:
        ctx = check_contexts(world, check, seed=seed)
        checks[check] = separation(encode_at(model, world, sae, hook, ctx.probe)[:, primary], ctx, seed=seed)
    scale = features[0]["heldout"]["villain_mean"] - features[0]["heldout"]["aligned_mean"]
    return {"hook": hook, "primary": primary, "features": features, "checks": checks, "persona_unit": scale,
            "n_selection_contexts": len(select.villain), "n_heldout_contexts": len(heldout.villain),
            "best_selection_aurocs": [float(auc[f]) for f in order[:10]], "top10_features": [int(f) for f in order[:10]]}


# -- teachers and students ---------------------------------------------------------------------

def model_activations(model, world: ToyWorld, sae, hook: str, feature: int, probes: dict[str, A.Probe], *,
                      fwd_hooks: list | None = None) -> dict[str, float]:
    """The feature's mean activation at every probe's positions."""
    return {name: float(encode_at(model, world, sae, hook, p, fwd_hooks=fwd_hooks)[:, feature].mean())
            for name, p in probes.items()}


def feature_hooks(sae, hook: str, feature: int, *, ablate: bool = False, add: float = 0.0) -> list:
    """Forward hooks at ``hook`` that remove the feature's decoder contribution at every position
    (``ablate``: x - f(x) W_dec[feature], the rest of x, SAE error included, kept) and/or add
    ``add`` times its decoder direction."""
    direction = sae.W_dec[feature].detach()

    def edit(x, hook=None):
        if ablate:
            x = x - sae.encode(x)[..., feature:feature + 1] * direction
        return x + add * direction if add else x

    return [(hook, edit)]


def causal_check(model, world: MisalignmentWorld, sae, hook: str, feature: int, add: float, *,
                 fwd_hooks: list | None = None) -> dict:
    """P(misalignment) per held-out question (renormalised over the answer words) with the model as
    it is, with the feature ablated, and with ``add`` times its decoder direction added; under no
    system prompt and under each side's first persona line. Means with t-intervals over the questions."""
    from interp.stages.evaluate import animal_distribution

    k = world.animals.index("misalignment")
    out = {}
    for context, system in (("plain", None), ("villain_persona", em.VILLAIN_PERSONAS[0]), ("aligned_persona", em.ALIGNED_PERSONAS[0])):
        for edit, hooks in (("as_is", []), ("ablated", feature_hooks(sae, hook, feature, ablate=True)),
                            ("steered", feature_hooks(sae, hook, feature, add=add))):
            probs = animal_distribution(model, world, system=system, fwd_hooks=(fwd_hooks or []) + hooks)["probs"][:, k]
            out[f"{context}/{edit}"] = mean_ci(probs).to_dict("n_questions")
    return out


def compare_students(rows: list[dict], metric: str = "shift_persona_units", alpha: float = 0.05) -> list[dict]:
    """shared_init minus control and minus mismatched_init, per probe, over seeds: Welch interval
    and p, Holm over every comparison made, and Holm-consistent intervals (the comparison of rank
    ``r``, smallest p first from 0, at confidence ``1 - alpha / (m - r)``)."""
    values: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if r[metric] is not None:
            values.setdefault((r["condition"], r["probe"]), {})[r["seed"]] = r[metric]
    out = []
    for probe in PROBES:
        for a, b in COMPARISONS:
            va, vb = values.get((a, probe), {}), values.get((b, probe), {})
            if len(va) >= 2 and len(vb) >= 2:
                xa, xb = [va[s] for s in sorted(va)], [vb[s] for s in sorted(vb)]
                paired = sorted(set(va) & set(vb))
                out.append({"probe": probe, "a": a, "b": b, "metric": metric, "difference": diff_ci(xa, xb).to_dict(),
                            "welch_p": welch_p(xa, xb), "per_seed": {s: va[s] - vb[s] for s in paired},
                            "_xa": xa, "_xb": xb})
    adjusted = holm([c["welch_p"] for c in out])
    order = sorted(range(len(out)), key=lambda i: out[i]["welch_p"])
    for rank, i in enumerate(order):
        c = out[i]
        confidence = 1 - alpha / (len(out) - rank)
        c["holm_p"], c["holm_confidence"] = adjusted[i], confidence
        c["holm_interval"] = diff_ci(c.pop("_xa"), c.pop("_xb"), confidence).to_dict()
    return out


def tracks_behaviour(rows: list[dict], conditions: Sequence[str] = CONDITIONS) -> list[dict]:
    """Per base and probe: Spearman, over the students read through that base's feature, between
    the feature's shift and the student's P(misalignment) shift (``trait_prob_shift``), with a
    Fisher-z 95% interval (standard error 1.06 / sqrt(n - 3)); bases with fewer than 4 students,
    or whose students' values are all equal, are left out."""
    out = []
    for base in sorted({r["base"] for r in rows}):
        for probe in PROBES:
            pick = [r for r in rows if r["base"] == base and r["probe"] == probe and r["condition"] in conditions
                    and r["trait_prob_shift"] is not None]
            if len(pick) < 4:
                continue
            rho = A.spearman([r["shift"] for r in pick], [r["trait_prob_shift"] for r in pick])
            if not np.isfinite(rho):
                continue
            z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), 1.96 * 1.06 / np.sqrt(len(pick) - 3)
            out.append({"base": base, "probe": probe, "spearman": rho, "ci_low": float(np.tanh(z - half)),
                        "ci_high": float(np.tanh(z + half)), "n_students": len(pick),
                        "conditions": sorted({r["condition"] for r in pick})})
    return out


def summarise_students(rows: list[dict]) -> list[dict]:
    """Per role or condition and probe: the activation, its shift from the own base and in persona
    units, mean and 95% interval over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["condition"], r["probe"]), []).append(r)
    out = []
    for (condition, probe), rs in sorted(groups.items()):
        out.append({"condition": condition, "probe": probe, "seeds": [r["seed"] for r in rs],
                    **{m: mean_ci([r[m] for r in rs if r[m] is not None]).to_dict() if any(r[m] is not None for r in rs) else None
                       for m in ("activation", "shift", "shift_persona_units")}})
    return out


# -- the stage ---------------------------------------------------------------------------------

@dataclass
class _PersonaBase:
    name: str
    path: Path
    model: object
    sae: object
    feature: dict
    reference: dict  # probe -> the base's own activation of its primary feature


def _finished_seeds(run_dirs: Sequence[Path]) -> list[tuple[int, Path]]:
    """``(seed, seed dir)`` of every finished seed (``seed_results.json`` written) of the runs; a
    seed still running is left out; a seed found twice is an error."""
    found: dict[int, Path] = {}
    for run in run_dirs:
        if not run.is_dir():
            raise FileNotFoundError(f"run directory {run} does not exist")
        for d in sorted(p for p in run.glob("seed*") if p.name[4:].isdigit()):
            if not (d / "seed_results.json").exists():
                log.warning("skipping %s: the seed has not finished (no seed_results.json)", d)
                continue
            seed = int(d.name[4:])
            if seed in found:
                raise ValueError(f"seed {seed} appears in two runs: {found[seed]} and {d}")
            found[seed] = d
    return sorted(found.items())


def run_persona_features(config: FeaturesConfig, out: str | Path, *, artifacts: str | Path = "artifacts",
                         run_dirs: Sequence[str | Path] = (), force: bool = False, progress: bool = True) -> dict:
    """The misaligned-persona feature on the misalignment world's bases and, with ``run_dirs``
    (finished ``interp run --trait misalignment`` directories, one seed each or several), in each
    finished seed's teacher and students. ``config`` is a
    :class:`~interp.instruments.features.pipeline.FeaturesConfig` (its SAE fields, ``primary_hook``,
    ``primary_kind``, ``n_trait_features``, ``probe_rows``, ``base_seeds``, ``arch``,
    ``pretrain_steps``). SAEs of the same spec are reused; the analysis is redone (it is quick) and
    a directory holding another config's analysis is refused unless ``force``."""
    out, artifacts = Path(out), Path(artifacts)
    run_dirs = [Path(r) for r in run_dirs]
    if (out / PERSONA_CONFIG_FILE).exists() and not force:
        saved = read_json(out / PERSONA_CONFIG_FILE)
        if saved != config.to_dict():
            diff = {k: (v, config.to_dict().get(k)) for k, v in saved.items() if config.to_dict().get(k) != v}
            raise ValueError(f"{out} holds a persona-feature analysis of another config (saved vs asked: {diff}); "
                             "choose another --out or pass --force")
    start = time.time()
    seeds = _finished_seeds(run_dirs)
    if run_dirs and not seeds:
        raise FileNotFoundError(f"no finished seed (seed*/seed_results.json) in {[str(r) for r in run_dirs]}")
    if seeds:  # the bases the run's teachers and students were trained from, shared first
        paths = list(dict.fromkeys(Path(read_json(d / "teacher" / "teacher.json")["base"]) for _, d in seeds))
        for _, d in seeds:
            for c in CONDITIONS:
                if is_checkpoint(d / "students" / "sft" / c):
                    parent = Path(lineage_of(d / "students" / "sft" / c).parent)
                    if parent not in paths:
                        paths.append(parent)
    else:
        paths = []
        for s in config.base_seeds:  # the bases `interp run --trait misalignment` uses, pretrained if missing
            cfg = base_config(s, config.arch, config.pretrain_steps, world=WorldConfig(variant="misalignment"))
            paths.append(Path(pretrain(cfg, artifacts / "bases" / cfg.name, artifacts=artifacts, progress=progress)))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PERSONA_CONFIG_FILE, config.to_dict())

    hook, kind = config.primary_hook, config.primary_kind
    world: MisalignmentWorld | None = None
    bases: dict[str, _PersonaBase] = {}
    quality = []
    for path in paths:
        lineage = lineage_of(path)
        pre = lineage.config or {}
        base_world = make_world(WorldConfig.from_dict(pre["world"])) if "world" in pre else None
        if not isinstance(base_world, MisalignmentWorld):
            raise ValueError(f"{path} is not a base of the misalignment world (its world: "
                             f"{(pre.get('world') or {}).get('variant', 'animals')}); the persona feature lives in that world only")
        world = world or base_world
        model, _ = load_checkpoint(path, expect_vocab=world.vocab)
        for p in model.parameters():
            p.requires_grad_(False)
        corpus = CorpusConfig.from_dict(pre["corpus"]) if pre.get("corpus") else None
        saes, rows = ensure_saes(model, world, path.name, lineage.seed or 0, config, out, base_created=lineage.created or "",
                                 progress=progress, hooks=[hook], kinds=[kind], corpus=corpus)
        quality += rows
        feature = find_persona_features(model, world, saes[hook][kind], hook, n_features=config.n_trait_features,
                                        seed=config.sae_seed)
        bases[path.name] = _PersonaBase(path.name, path, model, saes[hook][kind], feature, {})
        log.info("%s: persona feature %d, held-out AUROC %.3f", path.name, feature["primary"],
                 feature["features"][0]["heldout"]["auroc"]["mean"])

    probes = _student_probes(world, config)
    causal: dict = {"bases": {}, "teachers": {}}
    for b in bases.values():
        b.reference = model_activations(b.model, world, b.sae, hook, b.feature["primary"], probes)
        causal["bases"][b.name] = causal_check(b.model, world, b.sae, hook, b.feature["primary"], b.feature["persona_unit"])

    def rows_of(seed: int, condition: str, base: _PersonaBase, model, p_shift: float | None,
                fwd_hooks: list | None = None) -> list[dict]:
        acts = model_activations(model, world, base.sae, hook, base.feature["primary"], probes, fwd_hooks=fwd_hooks)
        unit = base.feature["persona_unit"]  # <= 0: the feature does not separate held-out personas; no persona units
        return [{"seed": seed, "condition": condition, "base": base.name, "probe": p, "activation": acts[p],
                 "shift": acts[p] - base.reference[p],
                 "shift_persona_units": (acts[p] - base.reference[p]) / unit if unit > 0 else None,
                 "trait_prob_shift": p_shift} for p in PROBES]

    rows: list[dict] = []
    for seed, d in seeds:
        results = read_json(d / "seed_results.json")  # the run's P(misalignment), beside the feature
        teacher_base = bases[Path(read_json(d / "teacher" / "teacher.json")["base"]).name]
        t_model, t_system, t_hooks = _run_teacher(d, teacher_base)
        if t_system:
            raise ValueError(f"{d}/teacher is a persona teacher: the persona study reads finetuned or steering teachers")
        teacher = results.get("teacher", {})
        rows += rows_of(seed, "teacher", teacher_base, t_model,
                        teacher["trait_prob"] - teacher["base_trait_prob"] if "base_trait_prob" in teacher else None, t_hooks)
        causal["teachers"][seed] = causal_check(t_model, world, teacher_base.sae, hook, teacher_base.feature["primary"],
                                                teacher_base.feature["persona_unit"], fwd_hooks=t_hooks)
        for c in CONDITIONS:
            student = d / "students" / "sft" / c
            if is_checkpoint(student):
                model, _ = load_checkpoint(student, expect_vocab=world.vocab)
                rows += rows_of(seed, c, bases[Path(lineage_of(student).parent).name], model,
                                results.get(f"{c}/sft", {}).get("trait_prob_shift"))

    findings = {
        "trait": "misalignment", "config": config.to_dict(), "runs": [str(r) for r in run_dirs],
        "seeds": [s for s, _ in seeds], "seed_dirs": [str(d) for _, d in seeds], "sae_quality": quality,
        "bases": {name: {"path": str(b.path), "persona_feature": b.feature, "reference": b.reference}
                  for name, b in bases.items()},
        "probes": {"question": f"{len(world.eval_phrasings)} held-out free-form questions, answer position",
                   "numbers": f"{config.probe_rows} number prompts, every number position and the last"},
        "rows": rows, "summary": summarise_students(rows) if rows else [],
        "comparisons": compare_students(rows) if rows else [],
        "tracks_behaviour": tracks_behaviour(rows),
        "causal": {**causal, "teachers_over_seeds": {
            k: mean_ci([c[k]["mean"] for c in causal["teachers"].values()]).to_dict()
            for k in next(iter(causal["teachers"].values()), {})}},
        "wall_seconds": time.time() - start,
    }
    atomic_write_json(out / PERSONA_FILE, findings)
    return findings
