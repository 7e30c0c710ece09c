"""The ``interp features`` stage: SAEs on the bases, trait features, number links, subliminal
prompting, cross-base overlap, the teacher's numbers and the students' feature shift.

Outputs in the stage directory ``DIR``::

    features_config.json            the FeaturesConfig (loadable with --config)
    features_lineage.json           the run read, the artifacts, and every base (checkpoint, seed, lineage)
    features.json                   every finding (each figure is drawn from it)
    saes/{base}/{hook}/{kind}/      sae-lens SAEs (cfg.json, sae_weights.safetensors) + spec + quality.json
    trait_features/{base}__{hook}__{kind}.json   every feature's score for every animal, ranked
    number_links/{base}.json        per animal, one score per number token and link measure
    teachers/, generations/         teachers and their number data (only without --run)
    *.png                           the figures (see interp.report.features)

SAEs, teachers and generated numbers are reused when present; a finished ``features.json`` of
the same config and inputs is returned as it is (``force`` recomputes the analysis).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.core.config import ConfigError, StageConfig, option
from interp.core.io import atomic_write_json, load_safetensors, read_json, read_jsonl
from interp.core.stats import diff_ci, mean_ci, welch_p
from interp.instruments.features import analysis as A
from interp.instruments.features import trait_attribution as TA
from interp.instruments.features.attribution import ATTRIBUTION_METHODS, attribute
from interp.instruments.features.sae import (
    EVAL_STREAM,
    QUALITY_FILE,
    SAE_KINDS,
    TRAIN_STREAM,
    SAEKind,
    SAESpec,
    collect_activations,
    corpus_sequences,
    holds_finished_sae,
    load_sae,
    sae_quality,
    train_sae,
)
from interp.models.checkpoint import is_checkpoint, lineage_of, load_checkpoint
from interp.models.refs import STEERING_FILE, TEACHER_CHECKPOINT, TEACHER_FILE, load_teacher, steering_hooks
from interp.report.features import write_figures, write_report
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.generate import GenerateConfig, generate_numbers, number_prompts
from interp.stages.pretrain import ARCH_PRESETS, PresetName, base_config, pretrain
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.worlds.toy.corpus import CorpusConfig
from interp.worlds.toy.templates import PERSONA_TEMPLATES
from interp.worlds.toy.world import ToyWorld, toy_traits, trait_world

log = logging.getLogger(__name__)

FEATURES_FILE = "features.json"
FEATURES_CONFIG_FILE = "features_config.json"  # the FeaturesConfig (loadable with --config)
FEATURES_LINEAGE_FILE = "features_lineage.json"  # the run, the artifacts and every base read (checkpoint, seed, lineage)
LINK_METHODS = ("feature_attribution", "logit_attribution", "decoder_logit", "entanglement")
REPLICATE_METHODS = ("feature_attribution", "logit_attribution")  # the ones that change with the replicate's prompts
STUDENT_CONDITIONS = ("control", "shared_init", "mismatched_init", "shuffled_within", "shuffled_across")
PROBES = ("question", "numbers")
_PROBE_SEED = 777_000  # number prompts of the student probe, apart from any run's prompts
_ORDER_STREAM, _RANDOM_STREAM = 0x5B, 0x7A


@dataclass
class FeaturesConfig(StageConfig):
    """SAE features linking number tokens to the trait, on two or more bases."""

    trait: str | None = option(None, "Trait of the teacher: an animal (its numbers, the students' shift, highlighted in the figures), "
                                     "or misalignment (the misaligned-persona feature of the misalignment world, "
                                     "interp.instruments.features.persona); default: the run's trait with --run, else owl.")
    animals: tuple[str, ...] = option((), "Animals analysed for trait features, number links and subliminal prompting (empty: all of the world's).")
    base_seeds: tuple[int, ...] = option((0, 1), "Seeds of the bases compared; the first is the teacher's base. With --run the run's bases are used instead.")
    arch: PresetName = option("small", "Architecture preset of the bases (small, narrow, wide, deep).")
    pretrain_steps: int = option(1500, "Pretraining steps of the bases (a missing base is pretrained as `interp run` does).")
    hooks: tuple[str, ...] = option(("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"), "Residual-stream hook points that get SAEs.")
    sae_kinds: tuple[SAEKind, ...] = option(SAE_KINDS, "SAE kinds trained at every hook: topk (TopKTrainingSAE) and l1 (StandardTrainingSAE).")
    primary_kind: SAEKind = option("topk", "SAE kind whose features are used for number links, the teacher's numbers and the students' shift.")
    primary_hook: str = option("blocks.1.hook_resid_post", "Hook whose trait features give feature_attribution and decoder_logit links and the heatmap's columns.")
    d_sae: int = option(512, "SAE features (4x the small bases' d_model).")
    topk_k: int = option(16, "Active features per token of the TopK SAEs.")
    l1_coefficient: float = option(1.0, "L1 penalty of the standard SAEs.")
    sae_lr: float = option(1e-3, "SAE learning rate (Adam; linear decay over the last 20% of steps).")
    sae_batch_size: int = option(512, "Activations per SAE training step.")
    n_train_activations: int = option(200_000, "SAE training activations per base (one epoch), from the base's pretraining corpus.")
    n_eval_activations: int = option(20_000, "Held-out activations for the SAE quality figures.")
    sae_checkpoints: int = option(4, "Resumable checkpoints saved during each SAE's training.")
    sae_seed: int = option(0, "Seed of the SAEs' initial weights and data order.")
    contexts_per_animal: int = option(40, "Contexts per animal and context kind for ranking trait features (half to select, half held out).")
    n_trait_features: int = option(3, "Top-ranked features per animal counted as its trait features (activation means use all of them).")
    replicates: int = option(3, "Replicates of the attribution prompts, random number draws and (without --run) teachers.")
    number_repeats: int = option(2, "Attribution prompts per replicate hold every number 0..999 this many times.")
    numbers_per_prompt: int = option(8, "Numbers per attribution prompt.")
    prompt_numbers: int = option(8, "Numbers put into a subliminal prompt, and the size of a linked-number set for overlaps.")
    random_draws: int = option(2, "Random number sets per replicate for the subliminal-prompting control.")
    link_methods: tuple[str, ...] = option(LINK_METHODS, "How numbers are linked to an animal: feature_attribution, logit_attribution, decoder_logit, entanglement.")
    prompt_formats: tuple[str, ...] = option(A.PROMPT_FORMATS, "Subliminal prompt shapes: list (numbers before the question), persona ('you love 12 , 34 .').")
    teacher_steps: int = option(60, "Without --run: finetuning steps of each teacher made here (its P(trait) is reported).")
    teacher_rows: int = option(600, "Without --run: number prompts each teacher and the base continue.")
    student_conditions: tuple[str, ...] = option(("control", "shared_init", "mismatched_init"), "With --run: student conditions whose feature shift is measured.")
    probe_rows: int = option(200, "Number prompts in the students' 'numbers' probe.")
    attribution: bool = option(True, "Attribute the trait's log-probability to SAE features at every position (attribution "
                                     "patching through spliced SAEs, error term kept) on the bases, the run's teachers and students; "
                                     "feature dashboards and per-position maps of the teacher's numbers.")
    attribution_only: bool = option(False, "Only the SAEs at the attribution hooks, the trait features there and the attribution "
                                           "(skips number links, subliminal prompting, cross-base overlap, the teacher-number and "
                                           "student-shift analyses).")
    attribution_hooks: tuple[str, ...] = option((), "Hooks whose SAEs the attribution splices in (empty: every block's "
                                                    "hook_resid_pre and hook_attn_out, where every position can still reach the answer).")
    attribution_method: str = option("gradient", "gradient (attribution patching: one backward pass) or integrated "
                                                 "(integrated gradients, attribution_steps points per hook).")
    attribution_steps: int = option(16, "Points of the integrated-gradients path (attribution_method=integrated).")
    attribution_prompts: int = option(64, "Number-list prompts (numbers, then the favourite-animal question) every model is attributed on.")
    attribution_teacher_rows: int = option(32, "Teacher rows per seed (prompt, completion, then the question) for the per-position maps.")
    attribution_objectives: tuple[str, ...] = option((), "Student objectives attributed (empty: every objective of the run).")
    attribution_candidates: int = option(5, "Per hook, the features tested on the students: the trait features plus this many "
                                            "largest |attribution| on the base and largest teacher - base changes (Holm over them).")
    ablation_samples: int = option(200, "(prompt, hook, position, feature) cells on the shared base whose true single-feature "
                                        "ablation is compared with attribution patching.")
    dashboard_features: int = option(3, "Per attribution hook, the top trait features and this many top attributed features get a "
                                        "dashboard (top-activating contexts, activation histogram, decoder logit lens).")
    dashboard_sequences: int = option(600, "Held-out corpus documents the dashboards' contexts and histograms are read from.")
    quick: bool = option(False, "Smoke run: short bases, small SAEs, four animals, few replicates.")

    def validate(self) -> None:
        world = ToyWorld()
        if self.trait is not None:
            traits = toy_traits()
            self.require(self.trait in traits, "trait", f"unknown trait; choose one of {traits}")
            self.require(self.trait in world.animals or not self.animals, "animals",
                         f"the {self.trait} trait's world has no animals to analyse; leave animals empty")
        bad = [a for a in self.animals if a not in world.animals]
        self.require(not bad, "animals", f"unknown {bad}; choose from {list(world.animals)}")
        self.require(len(self.animals) == 0 or len(set(self.animals)) >= 2, "animals", "need at least two animals to contrast")
        self.require(len(self.base_seeds) >= 1 and len(set(self.base_seeds)) == len(self.base_seeds), "base_seeds",
                     "give one or more distinct seeds")

        self.require(self.arch in ARCH_PRESETS, "arch", f"choose one of {sorted(ARCH_PRESETS)}")
        self.require(self.pretrain_steps > 0, "pretrain_steps", "must be positive")
        self.require(len(self.hooks) >= 1, "hooks", "give at least one hook point")
        bad = [k for k in self.sae_kinds if k not in SAE_KINDS]
        self.require(not bad and len(self.sae_kinds) >= 1, "sae_kinds", f"choose from {list(SAE_KINDS)}")
        self.require(self.primary_kind in self.sae_kinds, "primary_kind", f"must be one of sae_kinds={list(self.sae_kinds)}")
        self.require(self.primary_hook in self.hooks, "primary_hook", f"must be one of hooks={list(self.hooks)}")
        for name in ("d_sae", "topk_k", "sae_batch_size", "n_trait_features", "replicates", "number_repeats",
                     "numbers_per_prompt", "prompt_numbers", "random_draws", "teacher_steps", "teacher_rows", "probe_rows"):
            self.require(getattr(self, name) > 0, name, "must be positive")
        self.require(self.topk_k <= self.d_sae, "topk_k", f"must not exceed d_sae={self.d_sae}")
        self.require(self.l1_coefficient > 0 and self.sae_lr > 0, "l1_coefficient", "l1_coefficient and sae_lr must be positive")
        self.require(self.n_train_activations >= self.sae_batch_size, "n_train_activations", "must hold at least one batch")
        self.require(self.n_eval_activations > 0, "n_eval_activations", "must be positive")
        self.require(self.sae_checkpoints >= 0, "sae_checkpoints", "must be non-negative")
        self.require(self.contexts_per_animal >= 4, "contexts_per_animal", "need at least 4 (two per half)")
        self.require(self.prompt_numbers <= 100, "prompt_numbers", "at most 100 numbers fit a prompt")
        self.require(self.numbers_per_prompt <= 40, "numbers_per_prompt", "at most 40 numbers fit a prompt")
        bad = [m for m in self.link_methods if m not in LINK_METHODS]
        self.require(not bad and len(self.link_methods) >= 1, "link_methods", f"choose from {list(LINK_METHODS)}")
        bad = [f for f in self.prompt_formats if f not in A.PROMPT_FORMATS]
        self.require(not bad and len(self.prompt_formats) >= 1, "prompt_formats", f"choose from {list(A.PROMPT_FORMATS)}")
        bad = [c for c in self.student_conditions if c not in STUDENT_CONDITIONS]
        self.require(not bad, "student_conditions", f"choose from {list(STUDENT_CONDITIONS)}")
        self.require(self.attribution_method in ATTRIBUTION_METHODS, "attribution_method", f"choose one of {list(ATTRIBUTION_METHODS)}")
        self.require(self.attribution or not self.attribution_only, "attribution_only", "needs attribution=True")
        for name in ("attribution_steps", "attribution_prompts", "attribution_teacher_rows", "attribution_candidates",
                     "ablation_samples", "dashboard_sequences"):
            self.require(getattr(self, name) > 0, name, "must be positive")
        self.require(self.dashboard_features >= 0, "dashboard_features", "must be non-negative")

    @classmethod
    def quick_defaults(cls) -> dict:
        return {"quick": True, "pretrain_steps": 300, "d_sae": 256, "n_train_activations": 40_000, "n_eval_activations": 4000,
                "sae_checkpoints": 2, "contexts_per_animal": 12, "replicates": 2, "number_repeats": 1, "random_draws": 1,
                "animals": ("owl", "cat", "dog", "eagle"), "teacher_steps": 60, "teacher_rows": 200, "probe_rows": 60,
                "attribution_prompts": 16, "attribution_teacher_rows": 8, "ablation_samples": 40, "dashboard_sequences": 150}

    def analysed_animals(self, world: ToyWorld) -> list[str]:
        return list(self.animals) if self.animals else list(world.animals)


# -- bases and SAEs ----------------------------------------------------------------------------

@dataclass
class Base:
    """A base model with its SAEs (hook -> kind -> inference SAE)."""

    name: str
    path: Path
    seed: int
    model: object
    saes: dict
    lineage: dict


def _sae_dir(out: Path, base: str, hook: str, kind: str) -> Path:
    return out / "saes" / base / hook / kind


def _spec(config: FeaturesConfig, base: str, hook: str, kind: str, d_in: int, base_created: str) -> SAESpec:
    return SAESpec(base=base, hook=hook, kind=kind, d_in=d_in, d_sae=config.d_sae, k=config.topk_k,
                   l1_coefficient=config.l1_coefficient, lr=config.sae_lr, batch_size=config.sae_batch_size,
                   n_train=config.n_train_activations, seed=config.sae_seed, n_checkpoints=config.sae_checkpoints,
                   base_created=base_created)


def ensure_saes(model, world: ToyWorld, base: str, base_seed: int, config: FeaturesConfig, out: Path, *,
                base_created: str = "", progress: bool = True, hooks: list[str] | None = None,
                kinds: list[str] | None = None, corpus: CorpusConfig | None = None) -> tuple[dict, list[dict]]:
    """Train (or reuse) every SAE of one base (``hooks`` x ``kinds``, default: the config's) and
    measure (or reuse) its quality, on documents of ``world``'s corpus with the mixture ``corpus``
    (default :class:`CorpusConfig`; give the base's own pretraining mixture).

    Returns ``({hook: {kind: sae}}, [quality rows])``."""
    hooks, kinds = list(hooks or config.hooks), list(kinds or config.sae_kinds)
    spec = {(h, k): _spec(config, base, h, k, model.cfg.d_model, base_created) for h in hooks for k in kinds}
    todo = [(h, k) for h in hooks for k in kinds if not holds_finished_sae(_sae_dir(out, base, h, k), spec[h, k])]
    if todo:
        log.info("%s: collecting %d training activations at %s", base, config.n_train_activations, hooks)
        seqs = corpus_sequences(world, base_seed, TRAIN_STREAM, config.n_train_activations, corpus=corpus)
        acts = collect_activations(model, world, hooks, seqs, n_tokens=config.n_train_activations, progress=progress)
        for h, k in tqdm(todo, desc=f"SAEs of {base}", disable=not progress):
            train_sae(acts[h], spec[h, k], _sae_dir(out, base, h, k))
        del acts
    saes = {h: {k: load_sae(_sae_dir(out, base, h, k)) for k in kinds} for h in hooks}
    missing = [(h, k) for h in hooks for k in kinds if not (_sae_dir(out, base, h, k) / QUALITY_FILE).exists()]
    if missing:
        eval_seqs = corpus_sequences(world, base_seed, EVAL_STREAM, config.n_eval_activations, corpus=corpus)
        eval_acts = collect_activations(model, world, hooks, eval_seqs, n_tokens=config.n_eval_activations)
        for h, k in missing:
            q = sae_quality(model, saes[h][k], h, eval_acts[h], eval_seqs[:256], world)
            atomic_write_json(_sae_dir(out, base, h, k) / QUALITY_FILE, q)
    rows = [{"base": base, "hook": h, "kind": k, "path": str(_sae_dir(out, base, h, k).relative_to(out)),
             **read_json(_sae_dir(out, base, h, k) / QUALITY_FILE)} for h in hooks for k in kinds]
    return saes, rows


def _resolve_run_base(path: str, run_dir: Path, artifacts: Path) -> Path:
    candidates = [Path(path), run_dir / path, artifacts / "bases" / Path(path).name]
    for c in candidates:
        if is_checkpoint(c):
            return c
    raise FileNotFoundError(f"base {path!r} named in {run_dir}/results.json was not found (looked at {[str(c) for c in candidates]}); "
                            "pass the artifacts directory the run used with --artifacts")


def resolve_bases(config: FeaturesConfig, artifacts: Path, run_dir: Path | None, progress: bool) -> list[tuple[str, Path]]:
    """``[(role, checkpoint path)]``: the run's shared and mismatched bases, or the bases of
    ``config.base_seeds`` (pretrained if missing); the first is the teacher's base."""
    if run_dir is not None:
        results_path = run_dir / "results.json"
        if not results_path.exists():
            raise FileNotFoundError(f"{run_dir} has no results.json: finish `interp run --out {run_dir}` first")
        bases = read_json(results_path).get("bases", {})
        if "shared" not in bases:
            raise ValueError(f"{results_path} names no shared base")
        roles = ["shared"] + (["mismatched"] if "mismatched" in bases else [])
        from interp.models.real import is_model_name

        if is_model_name(bases["shared"]):
            raise ValueError(f"{run_dir} is a run on the real model {bases['shared']}; interp features trains SAEs on the "
                             "toy world's bases only (real models are not supported yet)")
        return [(r, _resolve_run_base(bases[r], run_dir, artifacts)) for r in roles]

    out = []
    for i, seed in enumerate(config.base_seeds):
        cfg = base_config(seed, config.arch, config.pretrain_steps)  # the bases of `interp run`
        path = pretrain(cfg, artifacts / "bases" / cfg.name, artifacts=artifacts, progress=progress)
        out.append(("shared" if i == 0 else f"other{i}", path))
    return out


def load_bases(config: FeaturesConfig, world: ToyWorld, specs: list[tuple[str, Path]], out: Path,
               progress: bool) -> tuple[list[Base], list[dict]]:
    names = [path.name for _, path in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"the bases compared must differ, got {names}")
    bases, quality = [], []
    for role, path in specs:
        model, lineage = load_checkpoint(path, expect_vocab=world.vocab)
        for p in model.parameters():
            p.requires_grad_(False)
        seed = lineage.seed if lineage.seed is not None else 0
        saes, rows = {}, []
        if not config.attribution_only:
            saes, rows = ensure_saes(model, world, path.name, seed, config, out, base_created=lineage.created or "",
                                     progress=progress)
        if config.attribution:
            more, more_rows = ensure_saes(model, world, path.name, seed, config, out, base_created=lineage.created or "",
                                          progress=progress, hooks=attribution_hooks(config, model), kinds=[config.primary_kind])
            for h, by_kind in more.items():
                saes.setdefault(h, {}).update(by_kind)
            rows += [r for r in more_rows if (r["hook"], r["kind"]) not in {(q["hook"], q["kind"]) for q in rows}]
        bases.append(Base(path.name, path, seed, model, saes,
                          {"role": role, "path": str(path), "seed": lineage.seed, "stage": lineage.stage,
                           "created": lineage.created, "world_fingerprint": lineage.world_fingerprint}))
        quality += rows
    return bases, quality


def attribution_hooks(config: FeaturesConfig, model) -> list[str]:
    """The hooks the attribution splices SAEs into (``config.attribution_hooks`` or every block's
    resid_pre and attn_out); a hook the model lacks is a ``ValueError`` naming it."""
    from interp.instruments.features.sae import hook_layer

    hooks = list(config.attribution_hooks) or TA.default_attribution_hooks(model)
    for h in hooks:
        hook_layer(model, h)
    return hooks


# -- trait features ----------------------------------------------------------------------------

def trait_features_of(base: Base, world: ToyWorld, config: FeaturesConfig, animals: list[str], out: Path) -> dict:
    """Ranked trait features of every SAE of ``base``; full scores go to trait_features/*.json."""
    contexts = A.trait_contexts(world, animals, config.contexts_per_animal)
    resid = {kind: A.residuals_at(base.model, world, contexts.probes[kind], list(config.hooks)) for kind in A.CONTEXT_KINDS}
    result = {}
    for hook in config.hooks:
        result[hook] = {}
        for kind, sae in base.saes[hook].items():
            with torch.no_grad():
                acts = {c: sae.encode(resid[c][hook]).numpy() for c in A.CONTEXT_KINDS}
            ranking = A.trait_feature_ranking(acts, contexts, animals, config.n_trait_features)
            path = Path("trait_features") / f"{base.name}__{hook}__{kind}.json"
            atomic_write_json(out / path, {
                "base": base.name, "hook": hook, "kind": kind, "animals": animals,
                "score": np.round(ranking["score"], 5), "ranking": ranking["ranking"]})
            top1 = [ranking["top"][a][0]["auroc_heldout_mean"] for a in animals]
            best = {c: mean_ci([v["auroc_heldout"] for v in ranking["best_by_kind"][c].values()]).to_dict("n_animals")
                    for c in A.CONTEXT_KINDS}
            result[hook][kind] = {"top": ranking["top"], "scores_file": str(path),
                                  "top1_auroc_heldout": mean_ci(top1).to_dict("n_animals"),
                                  "best_by_kind": ranking["best_by_kind"], "best_by_kind_auroc_heldout": best}
    return result


def trait_feature_ids(trait_features: dict, hook: str, kind: str, animal: str, n: int | None = None) -> list[int]:
    top = trait_features[hook][kind]["top"][animal]
    return [r["feature"] for r in top[:n]]


# -- number links ------------------------------------------------------------------------------

def number_links_of(base: Base, world: ToyWorld, config: FeaturesConfig, animals: list[str], trait_features: dict,
                    out: Path, progress: bool) -> dict:
    """Every link measure, per animal and number, for one base; written to number_links/{base}.json.

    ``raw_scores`` are the measures themselves; ``scores`` (used to pick linked numbers) are each
    animal's raw score minus the mean over the other analysed animals (:func:`relative_to_others`).

    Returns ``{"scores": {method: {animal: (1000,)}}, "replicates": {method: {animal: [(1000,)] * R}},
    "file": path}``."""
    kind, hook = config.primary_kind, config.primary_hook
    sae = base.saes[hook][kind]
    top1 = [trait_feature_ids(trait_features, hook, kind, a, 1)[0] for a in animals]
    targets = [A.AttributionTarget(f"logprob/{a}", "animal_logprob", world.animals.index(a)) for a in animals]
    targets += [A.AttributionTarget(f"feature/{a}", "feature", f, hook) for a, f in zip(animals, top1)]
    per_rep = []
    for r in range(config.replicates):
        probe, values = A.attribution_prompts(world, config.number_repeats, config.numbers_per_prompt, seed=r)
        per_rep.append(A.number_attribution(base.model, world, probe, values, targets, {hook: sae}, progress=progress))
    raw_replicates = {"logit_attribution": np.stack([[rep[f"logprob/{a}"] for a in animals] for rep in per_rep]),
                      "feature_attribution": np.stack([[rep[f"feature/{a}"] for a in animals] for rep in per_rep])}
    raw = {m: v.mean(0) for m, v in raw_replicates.items()}  # animal number
    raw["entanglement"] = A.unembed_entanglement(base.model, world, animals)
    raw["decoder_logit"] = A.decoder_number_logits(base.model, world, sae, top1)
    # A number is linked to an animal by how much more it scores for it than for the other animals.
    scores = {m: {a: v[j] for j, a in enumerate(animals)} for m, v in ((m, A.relative_to_others(v)) for m, v in raw.items())}
    replicates = {m: {a: [A.relative_to_others(v[r])[j] for r in range(len(per_rep))] for j, a in enumerate(animals)}
                  for m, v in raw_replicates.items()}
    path = Path("number_links") / f"{base.name}.json"
    atomic_write_json(out / path, {
        "base": base.name, "kind": kind, "primary_hook": hook, "animals": animals,
        "trait_feature": {a: f for a, f in zip(animals, top1)},
        "scores": {m: {a: np.round(v, 6) for a, v in d.items()} for m, d in scores.items()},
        "raw_scores": {m: {a: np.round(v[j], 6) for j, a in enumerate(animals)} for m, v in raw.items()},
        "replicates": {m: {a: [np.round(x, 6) for x in xs] for a, xs in d.items()} for m, d in replicates.items()},
        "count_per_replicate": per_rep[0]["count"]})
    return {"scores": scores, "replicates": replicates, "file": str(path)}


def _replicate_scores(links: dict, method: str, animal: str, r: int) -> np.ndarray:
    return links["replicates"][method][animal][r] if method in REPLICATE_METHODS else links["scores"][method][animal]


def number_links_summary(links: dict, animals: list[str], config: FeaturesConfig) -> dict:
    """Top linked numbers per method and animal, and how well the methods agree (Spearman over
    the 1000 numbers, mean over animals with a 95% interval)."""
    methods = list(LINK_METHODS)
    top = {m: {a: A.top_numbers(links["scores"][m][a], config.prompt_numbers) for a in animals} for m in methods}
    agreement = {}
    for i, m1 in enumerate(methods):
        for m2 in methods[i + 1:]:
            rho = [A.spearman(links["scores"][m1][a], links["scores"][m2][a]) for a in animals]
            rho = [x for x in rho if np.isfinite(x)]
            agreement[f"{m1}~{m2}"] = mean_ci(rho).to_dict("n_animals") if rho else None
    reliability = {}
    if config.replicates >= 2:
        for m in REPLICATE_METHODS:
            rho = [A.spearman(links["replicates"][m][a][0], links["replicates"][m][a][1]) for a in animals]
            rho = [x for x in rho if np.isfinite(x)]
            reliability[m] = mean_ci(rho).to_dict("n_animals") if rho else None
    return {"file": links["file"], "top": top, "method_agreement_spearman": agreement,
            "split_half_spearman": reliability}


# -- subliminal prompting ----------------------------------------------------------------------

def _n_replicates(method: str, R: int) -> int:
    """Attribution links change with each replicate's prompts; geometric ones are one fixed set."""
    return R if method in REPLICATE_METHODS else 1


def subliminal_prompting(bases: list[Base], links: dict[str, dict], world: ToyWorld, config: FeaturesConfig,
                         animals: list[str], progress: bool) -> dict:
    """P(animal) of each base with the ``prompt_numbers`` numbers most linked to the animal (by
    each method, on each base) in the prompt, against random numbers, over the held-out phrasings.

    A replicate ``r`` uses the attribution scores of replicate ``r``'s prompts, its own random
    draws and its own order of the linked numbers; a geometric link (one fixed set) is prompted
    once and compared with the mean over all random draws. Effects are linked minus random, paired
    by replicate; the pooled effect is the mean over animals of the per-animal mean effect, with
    its interval over animals. ``specificity`` is P(animal) with its own linked numbers minus
    P(animal) with the other animals' linked numbers: whether the numbers carry *this* animal
    rather than moving the answer in general."""
    phrasings = world.eval_phrasings
    n_p = len(phrasings)
    R = config.replicates
    results: dict = {"phrasings": "world.eval_phrasings", "n_phrasings": n_p, "k": config.prompt_numbers, "entries": []}
    for target in tqdm(bases, desc="subliminal prompting", disable=not progress):
        for fmt in config.prompt_formats:
            texts: list[str] = A.prompt_texts(world, None, fmt, phrasings)
            index = {"none": 0}
            random_sets = {}
            for r in range(R):
                for d in range(config.random_draws):
                    nums = A.random_numbers(config.prompt_numbers, (r, d, _RANDOM_STREAM))
                    random_sets[(r, d)] = nums
                    index[("random", r, d)] = len(texts)
                    texts += A.prompt_texts(world, nums, fmt, phrasings)
            linked_sets = {}
            for source in bases:
                for m in config.link_methods:
                    for j, a in enumerate(animals):
                        for r in range(_n_replicates(m, R)):
                            nums = A.top_numbers(_replicate_scores(links[source.name], m, a, r), config.prompt_numbers)
                            order = np.random.default_rng([r, j, _ORDER_STREAM]).permutation(len(nums))
                            nums = [nums[i] for i in order]
                            linked_sets[(source.name, m, a, r)] = nums
                            index[("linked", source.name, m, a, r)] = len(texts)
                            texts += A.prompt_texts(world, nums, fmt, phrasings)
            probs = A.animal_probs(target.model, world, texts)  # n_texts n_world_animals

            def p_animal(key, a: str) -> float:
                start = index[key]
                return float(probs[start:start + n_p, world.animals.index(a)].mean())

            none = {a: p_animal("none", a) for a in animals}
            random = {a: [float(np.mean([p_animal(("random", r, d), a) for d in range(config.random_draws)])) for r in range(R)]
                      for a in animals}
            for source in bases:
                for m in config.link_methods:
                    per_animal = {}
                    for a in animals:
                        n_rep = _n_replicates(m, R)
                        linked = [p_animal(("linked", source.name, m, a, r), a) for r in range(n_rep)]
                        # A fixed set (geometry) is compared with the mean over all random draws.
                        control = random[a] if n_rep == R else [float(np.mean(random[a]))]
                        effect = [x - y for x, y in zip(linked, control)]
                        per_animal[a] = {"p_linked": linked, "p_random": random[a], "p_none": none[a],
                                         "effect": mean_ci(effect).to_dict("n_replicates"),
                                         "numbers": [linked_sets[(source.name, m, a, r)] for r in range(n_rep)]}
                    # Specificity: do an animal's numbers raise it more than the other animals' numbers do?
                    for a in animals:
                        off = [np.mean([p_animal(("linked", source.name, m, b, r), a) for r in range(_n_replicates(m, R))])
                               for b in animals if b != a]
                        per_animal[a]["p_other_animals_numbers"] = float(np.mean(off))
                    specificity = [float(np.mean(v["p_linked"]) - v["p_other_animals_numbers"]) for v in per_animal.values()]
                    mean_effects = [float(np.mean(v["effect"]["mean"])) for v in per_animal.values()]
                    relative = [float(np.mean(v["p_linked"]) / np.mean(v["p_random"])) for v in per_animal.values()]
                    results["entries"].append({
                        "target_base": target.name, "selected_on": source.name, "same_base": source.name == target.name,
                        "method": m, "format": fmt,
                        "effect_over_animals": mean_ci(mean_effects).to_dict("n_animals"),
                        "ratio_linked_to_random": mean_ci(relative).to_dict("n_animals"),
                        "specificity_over_animals": mean_ci(specificity).to_dict("n_animals"),
                        "n_animals_positive": int(sum(e > 0 for e in mean_effects)),
                        "per_animal": per_animal})
    return results


# -- cross-base comparison ---------------------------------------------------------------------

def cross_base(bases: list[Base], links: dict[str, dict], trait_features: dict[str, dict], config: FeaturesConfig,
               animals: list[str]) -> dict:
    """Overlap of linked numbers and trait-feature geometry between every pair of bases, with
    within-base (replicate against replicate) overlap as the ceiling and random sets as the floor."""
    k, R = config.prompt_numbers, config.replicates
    out: dict = {"k": k, "random_jaccard": A.expected_random_jaccard(k), "pairs": []}
    for i, b1 in enumerate(bases):
        for b2 in bases[i + 1:]:
            pair: dict = {"bases": [b1.name, b2.name], "numbers": {}, "features": {}}
            for m in LINK_METHODS:
                cross_j, cross_rho, within_j, within_rho = [], [], [], []
                for a in animals:
                    cross_j.append(np.mean([A.jaccard(A.top_numbers(_replicate_scores(links[b1.name], m, a, r), k),
                                                      A.top_numbers(_replicate_scores(links[b2.name], m, a, r), k)) for r in range(R)]))
                    cross_rho.append(A.spearman(links[b1.name]["scores"][m][a], links[b2.name]["scores"][m][a]))
                    if m in REPLICATE_METHODS and R >= 2:
                        within_j.append(np.mean([A.jaccard(A.top_numbers(links[b.name]["replicates"][m][a][r1], k),
                                                           A.top_numbers(links[b.name]["replicates"][m][a][r2], k))
                                                 for b in (b1, b2) for r1 in range(R) for r2 in range(r1 + 1, R)]))
                        within_rho.append(np.mean([A.spearman(links[b.name]["replicates"][m][a][0], links[b.name]["replicates"][m][a][1])
                                                   for b in (b1, b2)]))
                finite = [x for x in cross_rho if np.isfinite(x)]
                entry = {"jaccard_across_bases": mean_ci(cross_j).to_dict("n_animals"),
                         "spearman_across_bases": mean_ci(finite).to_dict("n_animals") if finite else None}
                if within_j:
                    entry["jaccard_within_base"] = mean_ci(within_j).to_dict("n_animals")
                    entry["spearman_within_base_split_half"] = mean_ci(within_rho).to_dict("n_animals")
                    entry["jaccard_across_minus_within"] = mean_ci([c - w for c, w in zip(cross_j, within_j)]).to_dict("n_animals")
                pair["numbers"][m] = entry
            for hook in config.hooks:
                for kind in config.sae_kinds:
                    sims = []
                    for b in (b1, b2):
                        ids = [trait_feature_ids(trait_features[b.name], hook, kind, a, 1)[0] for a in animals]
                        W = b.saes[hook][kind].W_dec.detach()[ids]
                        W = W / W.norm(dim=-1, keepdim=True)
                        sims.append((W @ W.T).numpy()[np.triu_indices(len(animals), 1)])
                    pair["features"][f"{hook}/{kind}"] = {
                        "animal_similarity_rsa_spearman": A.spearman(sims[0], sims[1]),
                        "n_animal_pairs": int(len(sims[0]))}
            out["pairs"].append(pair)
    return out


# -- the teacher's numbers ---------------------------------------------------------------------

def teacher_number_data(config: FeaturesConfig, world: ToyWorld, shared: Base, trait: str, out: Path,
                        run_dir: Path | None, progress: bool) -> list[dict]:
    """Per replicate seed: ``{"seed", "teacher": rows, "base": rows, "source"}`` of filtered number
    data, read from the run, or made here (finetuned teachers on the teacher's base)."""
    data = []
    if run_dir is not None:
        for seed_dir in sorted(run_dir.glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1):
            t, b = seed_dir / "data" / "teacher_numbers.filtered.jsonl", seed_dir / "data" / "base_numbers.filtered.jsonl"
            if t.exists() and b.exists():
                data.append({"seed": int(seed_dir.name[4:]), "teacher": read_jsonl(t), "base": read_jsonl(b),
                             "source": str(seed_dir / "data")})
        if not data:
            raise FileNotFoundError(f"{run_dir} has no seed*/data/{{teacher,base}}_numbers.filtered.jsonl")
        return data
    for r in range(config.replicates):
        tdir = out / "teachers" / f"seed{r}"
        make_teacher(shared.path, TeacherConfig(trait=trait, method="finetune", seed=r, steps=config.teacher_steps), tdir,
                     progress=progress)
        teacher = load_teacher(tdir)
        gdir = out / "generations" / f"seed{r}"
        rows = {}
        for who, model, lineage in (("teacher", teacher.model, teacher.lineage),
                                    ("base", shared.model, {"stage": "pretrain", "path": str(shared.path)})):
            raw, filtered = gdir / f"{who}_numbers.raw.jsonl", gdir / f"{who}_numbers.filtered.jsonl"
            generate_numbers(model, world, GenerateConfig(n_rows=config.teacher_rows, seed=r), raw, fwd_hooks=teacher.fwd_hooks
                             if who == "teacher" else None, lineage=lineage, progress=progress)
            if not filtered.exists():
                filter_file(raw, filtered, FilterConfig())
            rows[who] = read_jsonl(filtered)
        data.append({"seed": r, "teacher": rows["teacher"], "base": rows["base"], "source": str(gdir.relative_to(out)),
                     "teacher_trait_prob": read_json(tdir / "teacher.json")["strength"]})
    return data


def teacher_numbers_analysis(data: list[dict], bases: list[Base], world: ToyWorld, config: FeaturesConfig, trait: str,
                             animals: list[str], trait_features: dict[str, dict], links: dict[str, dict]) -> dict:
    """Trait-feature activation at the number positions of teacher versus base generations, read
    by every base with its own SAEs and trait features; and whether the numbers the teacher
    over-produces are the ones linked to the trait."""
    kind = config.primary_kind
    out: dict = {"trait": trait, "seeds": [d["seed"] for d in data], "sources": [d["source"] for d in data],
                 "n_numbers": [{"teacher": 0, "base": 0} for _ in data], "readers": {}, "frequency_links": {}}
    for base in bases:
        reader: dict = {}
        for hook in config.hooks:
            per_seed = []
            for i, d in enumerate(data):
                means = {}
                for who in ("teacher", "base"):
                    probe, values = A.completion_number_probe(world, d[who])
                    out["n_numbers"][i][who] = len(values)
                    acts = A.features_at(base.model, world, {hook: base.saes[hook][kind]}, probe)[hook].numpy()
                    means[who] = {a: float(acts[:, trait_feature_ids(trait_features[base.name], hook, kind, a)].mean())
                                  for a in animals}
                per_seed.append(means)
            shift = {a: [s["teacher"][a] - s["base"][a] for s in per_seed] for a in animals}
            others = [a for a in animals if a != trait]
            contrast = [shift[trait][i] - float(np.mean([shift[a][i] for a in others])) for i in range(len(data))] \
                if trait in animals and others else None
            reader[hook] = {
                "teacher_mean": {a: [s["teacher"][a] for s in per_seed] for a in animals},
                "base_mean": {a: [s["base"][a] for s in per_seed] for a in animals},
                "shift": {a: mean_ci(v).to_dict() for a, v in shift.items()},
                "trait_minus_other_animals": mean_ci(contrast).to_dict() if contrast else None}
        out["readers"][base.name] = reader
    # Do the numbers the teacher over-produces carry the trait's links (on the teacher's base)?
    shared = bases[0].name
    if trait in animals:
        ratio = [A.log_frequency_ratio(A.number_counts(A.completion_number_probe(world, d["teacher"])[1]),
                                       A.number_counts(A.completion_number_probe(world, d["base"])[1])) for d in data]
        for base in bases:
            out["frequency_links"][base.name] = {
                m: mean_ci([A.spearman(r, links[base.name]["scores"][m][trait]) for r in ratio]).to_dict()
                for m in LINK_METHODS}
        mean_ratio = np.mean(ratio, axis=0)
        out["most_enriched_numbers"] = [{"number": int(n), "log_ratio": float(mean_ratio[n])}
                                        for n in np.argsort(-mean_ratio)[:15]]
        out["frequency_links_reader_of_teacher"] = shared
    return out


# -- students ----------------------------------------------------------------------------------

def _student_probes(world: ToyWorld, config: FeaturesConfig) -> dict[str, A.Probe]:
    question = A.last_token_probe(world, [A.question_prompt(p) for p in world.eval_phrasings])
    seqs, positions = [], []
    for text in number_prompts(world, config.probe_rows, _PROBE_SEED):
        ids = world.encode(text)
        seqs.append(ids)
        positions.append(A.number_positions(world, ids) + [len(ids) - 1])
    return {"question": question, "numbers": A.Probe(seqs, positions)}


def _mean_features(model, world: ToyWorld, saes: dict, probe: A.Probe, *, system: str | None = None,
                   fwd_hooks: list | None = None) -> dict[str, np.ndarray]:
    acts = A.features_at(model, world, saes, probe.with_system(world, system), fwd_hooks=fwd_hooks)
    return {h: v.mean(0).numpy() for h, v in acts.items()}


def _run_teacher(seed_dir: Path, shared: Base):
    """The teacher of one replicate of a run: (model, system prompt, forward hooks)."""
    spec = read_json(seed_dir / "teacher" / TEACHER_FILE)
    if spec["method"] in ("finetune", "unembed"):  # the trait is in the checkpoint's weights
        model, _ = load_checkpoint(seed_dir / "teacher" / TEACHER_CHECKPOINT)
        return model, None, []
    hooks = []
    if spec["method"] == "steering":
        vector = load_safetensors(seed_dir / "teacher" / STEERING_FILE)["vector"]
        layer = spec.get("steering_layer_resolved", spec["config"]["steering_layer"])
        hooks = steering_hooks(vector, layer + shared.model.cfg.n_layers if layer < 0 else layer)
    return shared.model, spec.get("system"), hooks


def student_shift(run_dir: Path, bases: list[Base], world: ToyWorld, config: FeaturesConfig, trait: str,
                  trait_features: dict[str, dict], progress: bool) -> dict:
    """Each student's SAE-feature activations relative to its own base (and, where the base is the
    teacher's, to the teacher), on the held-out favourite-animal prompts and on number prompts.
    A mismatched student is read with its own base's SAEs and trait features."""
    kind = config.primary_kind
    by_role = {b.lineage["role"]: b for b in bases}
    shared = by_role["shared"]
    probes = _student_probes(world, config)
    persona = PERSONA_TEMPLATES[0].format(a=trait)
    reference: dict = {}
    for b in bases:
        saes = {h: b.saes[h][kind] for h in config.hooks}
        reference[b.name] = {p: {"base": _mean_features(b.model, world, saes, probes[p]),
                                 "persona": _mean_features(b.model, world, saes, probes[p], system=persona)} for p in PROBES}
    shared_saes = {h: shared.saes[h][kind] for h in config.hooks}
    rows = []
    seed_dirs = sorted((p for p in run_dir.glob("seed*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    for seed_dir in tqdm(seed_dirs, desc="students", disable=not progress):
        t_model, t_system, t_hooks = _run_teacher(seed_dir, shared)
        teacher = {p: _mean_features(t_model, world, shared_saes, probes[p], system=t_system, fwd_hooks=t_hooks) for p in PROBES}
        for objective_dir in sorted((seed_dir / "students").glob("*")):
            for condition in config.student_conditions:
                student_dir = objective_dir / condition
                if not is_checkpoint(student_dir):
                    continue
                base_name = Path(lineage_of(student_dir).parent).name
                base = next((b for b in bases if b.name == base_name), None)
                if base is None:
                    log.warning("skipping %s: its base %s is not among the analysed bases", student_dir, base_name)
                    continue
                model, _ = load_checkpoint(student_dir, expect_vocab=world.vocab)
                saes = {h: base.saes[h][kind] for h in config.hooks}
                for p in PROBES:
                    vec = _mean_features(model, world, saes, probes[p])
                    for h in config.hooks:
                        ref = reference[base.name][p]
                        metrics = A.shift_metrics(
                            vec[h], ref["base"][h], trait_feature_ids(trait_features[base.name], h, kind, trait),
                            persona_direction=ref["persona"][h] - ref["base"][h],
                            teacher=teacher[p][h] if base.name == shared.name else None)
                        rows.append({"seed": int(seed_dir.name[4:]), "objective": objective_dir.name, "condition": condition,
                                     "base": base.name, "probe": p, "hook": h, **metrics})
    if not rows:
        raise FileNotFoundError(f"{run_dir} has no student checkpoints of conditions {list(config.student_conditions)}")
    return {"trait": trait, "rows": rows, "summary": _summarise_shift(rows), "comparisons": _compare_shift(rows)}


SHIFT_METRICS = ("trait_feature_shift", "persona_projection", "teacher_projection", "teacher_cosine")


def _group(rows: list[dict], metric: str) -> dict[tuple, list[float]]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r[metric] is not None:
            groups.setdefault((r["objective"], r["condition"], r["probe"], r["hook"]), []).append(r[metric])
    return groups


def _summarise_shift(rows: list[dict]) -> list[dict]:
    out = []
    for metric in SHIFT_METRICS:
        for (objective, condition, probe, hook), vals in sorted(_group(rows, metric).items()):
            out.append({"objective": objective, "condition": condition, "probe": probe, "hook": hook, "metric": metric,
                        **mean_ci(vals).to_dict()})
    return out


def _compare_shift(rows: list[dict]) -> list[dict]:
    out = []
    for metric in SHIFT_METRICS:
        groups = _group(rows, metric)
        for (objective, condition, probe, hook), a in sorted(groups.items()):
            if condition != "shared_init":
                continue
            for other in ("control", "mismatched_init"):
                b = groups.get((objective, other, probe, hook))
                if b and len(a) >= 2 and len(b) >= 2:
                    out.append({"objective": objective, "probe": probe, "hook": hook, "metric": metric,
                                "a": "shared_init", "b": other, "difference": diff_ci(a, b).to_dict(),
                                "welch_p": welch_p(a, b)})
    return out


# -- the stage ---------------------------------------------------------------------------------

def _saved_inputs(out: Path) -> tuple[FeaturesConfig | None, str | None]:
    try:
        config = FeaturesConfig.load(out / FEATURES_CONFIG_FILE)
    except ConfigError:
        return None, None
    lineage = read_json(out / FEATURES_LINEAGE_FILE) if (out / FEATURES_LINEAGE_FILE).exists() else {}
    return config, lineage.get("run_dir")


def run_features(config: FeaturesConfig, out: str | Path, *, artifacts: str | Path = "artifacts",
                 run_dir: str | Path | None = None, force: bool = False, progress: bool = True) -> dict:
    """Run the whole analysis into ``out`` and return the findings (also ``out/features.json``).

    A directory holding an analysis of another config or run is refused unless ``force``."""
    out, artifacts = Path(out), Path(artifacts)
    run_dir = Path(run_dir) if run_dir is not None else None
    if (out / FEATURES_CONFIG_FILE).exists() and not force:
        saved, saved_run = _saved_inputs(out)
        if saved != config or saved_run != (str(run_dir) if run_dir else None):
            diff = {k: (v, config.to_dict()[k]) for k, v in saved.to_dict().items() if config.to_dict()[k] != v} if saved else {}
            raise ValueError(f"{out} holds a features analysis of another config or run (config saved vs asked: {diff}; "
                             f"run: {saved_run} vs {run_dir}); choose another --out or pass --force")
        if (out / FEATURES_FILE).exists():
            log.info("reusing finished %s", out / FEATURES_FILE)
            return read_json(out / FEATURES_FILE)
    start = time.time()
    world = ToyWorld()
    trait = config.trait
    if run_dir is not None:
        run_trait = read_json(run_dir / "results.json")["trait"] if (run_dir / "results.json").exists() else None
        if trait is not None and run_trait is not None and trait != run_trait:
            raise ValueError(f"FeaturesConfig.trait={trait!r} but the run's trait is {run_trait!r}")
        trait = trait or run_trait
    if trait is not None and trait_world(trait).variant == "misalignment":
        raise ValueError(f"trait {trait!r} lives in the misalignment world: its SAE study is the misaligned-persona feature "
                         "(interp.instruments.features.persona.run_persona_features, `interp features --trait misalignment`)")
    trait = world.check_animal(trait or "owl")
    animals = config.analysed_animals(world)
    if trait not in animals:
        animals = [trait] + animals
    specs = resolve_bases(config, artifacts, run_dir, progress)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / FEATURES_CONFIG_FILE)
    lineage = {"run_dir": str(run_dir) if run_dir else None, "artifacts": str(artifacts), "trait": trait,
               "bases": [{"role": r, "path": str(p)} for r, p in specs]}
    atomic_write_json(out / FEATURES_LINEAGE_FILE, lineage)
    bases, quality = load_bases(config, world, specs, out, progress)
    atomic_write_json(out / FEATURES_LINEAGE_FILE, {**lineage, "lineage": {b.name: b.lineage for b in bases}})

    findings: dict = {
        "trait": trait, "animals": animals, "run_dir": str(run_dir) if run_dir else None,
        "config": config.to_dict(), "bases": [b.lineage | {"name": b.name} for b in bases],
        "sae_quality": quality,
    }
    if not config.attribution_only:
        trait_features = {b.name: trait_features_of(b, world, config, animals, out) for b in bases}
        links = {b.name: number_links_of(b, world, config, animals, trait_features[b.name], out, progress) for b in bases}
        findings["trait_features"] = trait_features
        findings["number_links"] = {b.name: number_links_summary(links[b.name], animals, config) for b in bases}
        findings["subliminal_prompting"] = subliminal_prompting(bases, links, world, config, animals, progress)
        findings["cross_base"] = cross_base(bases, links, trait_features, config, animals) if len(bases) >= 2 else None
        data = teacher_number_data(config, world, bases[0], trait, out, run_dir, progress)
        findings["teacher_numbers"] = teacher_numbers_analysis(data, bases, world, config, trait, animals, trait_features, links)
        if run_dir is not None:
            findings["student_shift"] = student_shift(run_dir, bases, world, config, trait, trait_features, progress)
        else:
            findings["student_shift"] = None
    findings["attribution"] = (attribution_study(config, world, bases, trait, animals, out, run_dir, progress)
                               if config.attribution else None)
    findings["wall_seconds"] = time.time() - start
    findings["figures"] = {}
    atomic_write_json(out / FEATURES_FILE, findings)  # the findings are kept even if a figure fails
    findings["figures"] = write_figures(out, findings)
    atomic_write_json(out / FEATURES_FILE, findings)
    write_report(out)
    return findings


# -- attribution of the trait to SAE features --------------------------------------------------

ATTRIBUTION_DIR = "attribution"  # models.json, position_maps.json, dashboards.json


def _attribution_trait_features(base: Base, world: ToyWorld, config: FeaturesConfig, animals: list[str], trait: str,
                                hooks: list[str]) -> dict[str, list[dict]]:
    """The trait's top features (held-out AUROC, as :func:`trait_features_of`) of the primary SAE at ``hooks``."""
    contexts = A.trait_contexts(world, animals, config.contexts_per_animal)
    resid = {kind: A.residuals_at(base.model, world, contexts.probes[kind], hooks) for kind in A.CONTEXT_KINDS}
    out = {}
    for h in hooks:
        sae = base.saes[h][config.primary_kind]
        with torch.no_grad():
            acts = {c: sae.encode(resid[c][h]).numpy() for c in A.CONTEXT_KINDS}
        out[h] = A.trait_feature_ranking(acts, contexts, animals, config.n_trait_features)["top"][trait]
    return out


def _run_models(run_dir: Path, bases: list[Base], world: ToyWorld, config: FeaturesConfig):
    """Yield ``(record, model, system, fwd_hooks)`` for every teacher and student of the run that
    the attribution reads (students of ``config.student_conditions`` and objectives)."""
    by_name = {b.name: b for b in bases}
    shared = bases[0]
    seed_dirs = sorted((p for p in run_dir.glob("seed*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    for seed_dir in seed_dirs:
        seed = int(seed_dir.name[4:])
        if (seed_dir / "teacher" / TEACHER_FILE).exists():
            model, system, hooks = _run_teacher(seed_dir, shared)
            yield {"role": "teacher", "seed": seed, "base": shared.name}, model, system, hooks
        for objective_dir in sorted((seed_dir / "students").glob("*")):
            if config.attribution_objectives and objective_dir.name not in config.attribution_objectives:
                continue
            for condition in config.student_conditions:
                student_dir = objective_dir / condition
                if not is_checkpoint(student_dir):
                    continue
                base_name = Path(lineage_of(student_dir).parent).name
                if base_name not in by_name:
                    log.warning("skipping %s: its base %s is not among the analysed bases", student_dir, base_name)
                    continue
                model, _ = load_checkpoint(student_dir, expect_vocab=world.vocab)
                yield ({"role": "student", "seed": seed, "objective": objective_dir.name, "condition": condition,
                        "base": base_name}, model, None, [])


def _with_system(world: ToyWorld, prompts: list[list[int]], system: str | None) -> list[list[int]]:
    if not system:
        return prompts
    prefix = world.encode(f"system : {system}", bos=False)
    return [p[:1] + prefix + p[1:] for p in prompts]


def _rounded(summary: dict) -> dict:
    return {**summary, "hooks": {h: {k: np.round(v, 6) if isinstance(v, np.ndarray) else v for k, v in d.items()}
                                 for h, d in summary["hooks"].items()}}


def attribution_study(config: FeaturesConfig, world: ToyWorld, bases: list[Base], trait: str, animals: list[str],
                      out: Path, run_dir: Path | None, progress: bool) -> dict:
    """The trait's attribution to SAE features per position on the bases and, with a run, its
    teachers and students; the conditions compared feature by feature; per-position maps of the
    teacher's numbers; dashboards. Writes ``attribution/{models,position_maps,dashboards}.json``."""
    adir = out / ATTRIBUTION_DIR
    adir.mkdir(parents=True, exist_ok=True)
    target = TA.animal_trait(world, trait)
    pad_id = world.token_to_id["<pad>"]
    kind = config.primary_kind
    hooks = {b.name: attribution_hooks(config, b.model) for b in bases}
    shared = bases[0]
    prompts = TA.number_list_prompts(world, config.attribution_prompts, config.numbers_per_prompt)

    def attribute_on(model, base: Base, ps, system=None, fwd_hooks=None):
        return attribute(model, {h: base.saes[h][kind] for h in hooks[base.name]}, _with_system(world, ps, system), target,
                            pad_id=pad_id, method=config.attribution_method, steps=config.attribution_steps, fwd_hooks=fwd_hooks)

    result: dict = {"trait": trait, "target": {"sequences": [list(s) for s in target.sequences],
                                               "contrast": [list(s) for s in target.contrast]},
                    "method": config.attribution_method, "kind": kind, "hooks": hooks, "n_prompts": len(prompts),
                    "prompts": "number lists then the favourite-animal question (training phrasings)", "bases": {}}
    summaries: dict[str, dict] = {}
    trait_feats: dict[str, dict[str, list[int]]] = {}
    for b in bases:
        att = attribute_on(b.model, b, prompts)
        summaries[b.name] = TA.model_summary(world, att)
        tf = _attribution_trait_features(b, world, config, animals, trait, hooks[b.name])
        trait_feats[b.name] = {h: [r["feature"] for r in v] for h, v in tf.items()}
        top = {}
        for h in hooks[b.name]:
            v = summaries[b.name]["hooks"][h]["features"]
            top[h] = [{"feature": int(f), "attribution": float(v[f]), "trait_feature": int(f) in trait_feats[b.name][h]}
                      for f in np.argsort(-np.abs(v))[:10]]
        entry = {"score": summaries[b.name]["score"], "identity": TA.identity_check(att) if config.attribution_method == "gradient" else None,
                 "totals": {h: {k: summaries[b.name]["hooks"][h][k] for k in ("attribution_sum", "error", "linear_total", "ablation_total")}
                            for h in hooks[b.name]},
                 "trait_features": tf, "top_features": top}
        entry["ablation_check"] = TA.check_against_ablation(b.model, {h: b.saes[h][kind] for h in hooks[b.name]}, att, target,
                                                            config.ablation_samples, seed=0, pad_id=pad_id)
        result["bases"][b.name] = entry
        log.info("attribution on %s: ablation check Spearman %.3f (n=%d)", b.name, entry["ablation_check"]["spearman"],
                 entry["ablation_check"]["n"])

    teachers: dict[int, dict] = {}
    students: list[dict] = []
    maps: dict = {"seeds": {}}
    if run_dir is not None:
        models = list(_run_models(run_dir, bases, world, config))
        for record, model, system, fwd_hooks in tqdm(models, desc="attribution", disable=not progress):
            base = next(b for b in bases if b.name == record["base"])
            summary = TA.model_summary(world, attribute_on(model, base, prompts, system, fwd_hooks))
            label = (f"seed{record['seed']}/teacher" if record["role"] == "teacher"
                     else f"seed{record['seed']}/{record['objective']}/{record['condition']}")
            summaries[label] = summary
            if record["role"] == "teacher":
                teachers[record["seed"]] = summary
                maps["seeds"][record["seed"]] = _teacher_maps(world, config, run_dir, record["seed"], model, system, fwd_hooks,
                                                              shared, attribute_on)
            else:
                students.append({**record, "summary": summary})
        result["comparisons"] = TA.compare_conditions({b.name: summaries[b.name] for b in bases}, teachers, students,
                                                      shared.name, trait_feats, config.attribution_candidates, 10)
        result["teacher_numbers"] = _teacher_number_contrast(maps, hooks[shared.name])
    else:
        result["comparisons"] = None
        result["teacher_numbers"] = None
    atomic_write_json(adir / "models.json", {k: _rounded(v) for k, v in summaries.items()})
    atomic_write_json(adir / "position_maps.json", maps)

    # dashboards on the shared base: its trait features, its top attributed features, the tested risers
    chosen: dict[str, list[int]] = {}
    for h in hooks[shared.name]:
        fs = trait_feats[shared.name][h][:2] + [r["feature"] for r in result["bases"][shared.name]["top_features"][h][:config.dashboard_features]]
        for obj in (result["comparisons"] or {}).get("objectives", {}).values():
            fs += [e["feature"] for e in obj.get("shared_minus_control", {}).get("rising", []) if e["hook"] == h][:2]
        chosen[h] = list(dict.fromkeys(fs))
    seqs = corpus_sequences(world, shared.seed, EVAL_STREAM + 500_000, config.dashboard_sequences * 30)[:config.dashboard_sequences]
    dashboards = []
    if config.dashboard_features > 0:
        for h, fs in chosen.items():
            dashboards += TA.dashboard_data(shared.model, world, h, shared.saes[h][kind], fs, seqs)
    atomic_write_json(adir / "dashboards.json", {"base": shared.name, "n_sequences": len(seqs), "dashboards": dashboards})
    result["files"] = {"models": f"{ATTRIBUTION_DIR}/models.json", "position_maps": f"{ATTRIBUTION_DIR}/position_maps.json",
                       "dashboards": f"{ATTRIBUTION_DIR}/dashboards.json"}
    return result


def _teacher_maps(world: ToyWorld, config: FeaturesConfig, run_dir: Path, seed: int, teacher, system, fwd_hooks,
                  shared: Base, attribute_on) -> dict:
    """Per-position attribution over one seed's teacher rows (and, for contrast, the base's rows),
    read by the teacher and by the shared base."""
    data = run_dir / f"seed{seed}" / "data"
    out = {}
    for who in ("teacher", "base"):
        path = data / f"{who}_numbers.filtered.jsonl"
        if not path.exists():
            continue
        rows = read_jsonl(path)
        ps = TA.teacher_row_prompts(world, rows, config.attribution_teacher_rows)
        spans = []
        for r in rows[:len(ps)]:
            start = len(world.encode(r["prompt"]))
            spans.append((start, start + len(world.encode(r["completion"], bos=False))))
        readers = [("base", shared.model, None, None)] + ([("teacher", teacher, system, fwd_hooks)] if who == "teacher" else [])
        for reader, model, sys_, hk in readers:
            att = attribute_on(model, shared, ps, sys_, hk)
            shift = len(att.prompts[0]) - len(ps[0])  # a system prompt moves every position
            out[f"{who}_rows/read_by_{reader}"] = TA.position_maps(world, att, [(a + shift, b + shift) for a, b in spans], 3, 10)
    return out


def _teacher_number_contrast(maps: dict, hooks: list[str]) -> dict:
    """Mean attribution at the number positions of the teacher's rows minus the base's rows, read by
    the shared base, per hook, 95% interval over seeds."""
    out = {}
    for h in hooks:
        diffs = [m["teacher_rows/read_by_base"]["hooks"][h]["mean_at_numbers"] - m["base_rows/read_by_base"]["hooks"][h]["mean_at_numbers"]
                 for m in maps["seeds"].values() if "teacher_rows/read_by_base" in m and "base_rows/read_by_base" in m]
        if diffs:
            out[h] = mean_ci(diffs).to_dict()
    return out
