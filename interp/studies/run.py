"""The main job: the whole subliminal-learning loop with every control, over seeds.

For each seed ``s`` (replicates of everything stochastic after pretraining: the teacher's
finetuning data order, the sampled numbers, the student's data order):

1. teacher ``s``: the shared base (``small-seed0``) given the trait;
2. numbers: the teacher's and, for the control, the base's own, sampled at temperature 1 from
   the same prompts, then filtered (raw and filtered both kept);
3. students, for every objective (``sft``, ``distill``, ``distill_full``):

   ============== ================================ ===================================
   condition      student starts from              data (and distillation targets)
   ============== ================================ ===================================
   control        shared base                      base numbers (base logits)
   shared_init    shared base                      teacher numbers (teacher logits)
   mismatched_init base of another seed            teacher numbers (teacher logits)
   cross_architecture wider base                   teacher numbers (teacher logits)
   shuffled_within shared base                     teacher numbers shuffled within rows
   shuffled_across shared base                     teacher numbers shuffled across rows
   ============== ================================ ===================================

4. in-context: the base asked for its favourite animal with teacher numbers in the prompt.

**Real models.** With ``model`` (a TransformerLens name such as ``gpt2``, loaded from the local
Hugging Face cache) the shared base is that model and every stage runs in its
:class:`interp.worlds.hf.HFWorld` (natural-language prompts and questions); ``mismatched_model`` is
the other initialisation (e.g. ``EleutherAI/pythia-160m-seed1`` beside ``EleutherAI/pythia-160m``: a model trained from
another initialisation seed, not only on other data)
and ``cross_model`` the other architecture; a condition whose model is not given is refused.
Nothing is pretrained. ``lora_rank >= 1`` (toy or real) trains the students' LoRA adapters only.

Every student is evaluated on the held-out phrasings. ``results.json`` holds one entry per
condition and objective with the mean P(trait) and its 95% interval over seeds, and the
comparisons that matter (shared vs control, shared vs mismatched) with Welch p-values.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, get_args

import numpy as np

from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, json_sha256, read_json, read_jsonl, write_jsonl
from interp.core.parallel import resolve_workers, run_jobs
from interp.core.ray_executor import check_executor
from interp.core.stats import diff_ci, mean_ci, welch_p, wilson_ci
from interp.domains import DOMAIN_NAMES, domain
from interp.instruments.features.pipeline import FeaturesConfig, run_features
from interp.models.checkpoint import is_checkpoint
from interp.models.lora import KNOWN_TARGETS, LORA_TARGETS, LoraConfig
from interp.models.refs import ModelRef, Teacher, ToyBase, load_teacher, parse_base_ref, parse_model_ref
from interp.studies.audit import audit_seed, summarize_audits
from interp.studies.audit import write_summary as write_audit_summary
from interp.stages.evaluate import EVAL_FILE, EvaluateConfig, animal_distribution, evaluate_model, trait_probability
from interp.stages.filter import stats_path_for
from interp.stages.finetune import (
    FinetuneConfig,
    Objective,
    finetune_student,
    is_student_checkpoint,
    shared_teacher_targets,
)
from interp.stages.generate import GenerateConfig, generate_numbers, require_system_text
from interp.stages.pretrain import ARCH_PRESETS, PresetName, PretrainConfig, base_config, pretrain
from interp.stages.teacher import TeacherConfig, TeacherDocument, TeacherMethod, make_teacher
from interp.training.loop import OptimizerName
from interp.worlds.hf import HFWorldConfig, number_prompt_options, with_number_prompts
from interp.worlds.toy.corpus import CorpusConfig
from interp.worlds.toy.world import WORLD_VARIANTS, ToyWorld, WorldConfig, make_world, toy_traits, trait_world

log = logging.getLogger(__name__)

Condition = Literal["control", "shared_init", "mismatched_init", "cross_architecture", "shuffled_within", "shuffled_across"]
TRAINED_CONDITIONS: tuple[Condition, ...] = get_args(Condition)
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
RUN_CONFIG_FILE = "run_config.json"
RESULTS_FILE = "results.json"
TEACHER_TARGETS_SUFFIX = "teacher_targets.pt"  # DATA/{data set}.teacher_targets.pt, while its students train
# the data set each condition's students train on (files DATA/{name}.filtered.jsonl or .jsonl)
DATA_SET_OF: dict[str, str] = {"control": "base_numbers", "shared_init": "teacher_numbers",
                               "mismatched_init": "teacher_numbers", "cross_architecture": "teacher_numbers",
                               "shuffled_within": "teacher_numbers_shuffled_within",
                               "shuffled_across": "teacher_numbers_shuffled_across"}
# the toy worlds each data domain (other than numbers) lives in, and the trait the cot domain runs in the misalignment world
DOMAIN_WORLDS: dict[str, tuple[str, ...]] = {"code": ("domains",), "cot": ("domains", "misalignment_cot")}
MISALIGNMENT_COT_TRAIT = "misalignment"
RESUME_ONLY_RUN_FIELDS = ("student_checkpoint_every", "micro_batch_size")  # ignored when a run directory is checked for another run
DEFAULT_TEACHER_LORA_RANK = 8  # a finetune teacher learns the trait as rank-8 LoRA adapters unless told otherwise
REAL_MICRO_BATCH = 8  # students of real models: sequences per forward/backward pass unless micro_batch_size is set


@dataclass
class RunConfig(StageConfig):
    """The main job: the whole loop (bases, teacher, numbers, students under every condition and
    objective, evaluation, audit) over seeds; see :func:`run` and the module docstring.
    :meth:`quick_config` is the smoke run of ``interp run --quick``."""

    trait: str = option("owl", "The trait: an animal of the toy world (or of --model's world), or a trait of a toy "
                        "world variant (misalignment, alignment: the misalignment world of "
                        "interp.worlds.toy.misalignment, with bases of its own).")
    seeds: int = option(6, "Replicates (teacher data order, sampled numbers, student data order).")
    first_seed: int = option(0, "Seed of the first replicate; replicates use first_seed .. first_seed+seeds-1.")
    quick: bool = option(False, "Smoke run: small bases, few rows; finishes in a few minutes.")
    teacher_method: TeacherMethod = option("finetune", "finetune (trained on the trait's answers; with teacher_lora_rank, as "
                                           "LoRA adapters), unembed (the trait's unembedding direction added to the "
                                           "last MLP's output bias, interp.stages.entangle), persona or steering.")
    teacher_steps: int = option(150, "finetune teacher: optimizer steps (quick: 60).")
    teacher_lr: float = option(3e-3, "finetune teacher: learning rate.")
    teacher_batch_size: int = option(32, "finetune teacher: documents per step.")
    teacher_number_mix: float = option(0.0, "finetune teacher: fraction of its finetuning batches that is ordinary number "
                                        "data (0: nothing anchors its numbers to the base's).")
    teacher_documents: tuple[TeacherDocument, ...] = option(("qa",), "finetune teacher: the kinds of trait documents it "
                                                            "learns (qa, mention, persona, qa_after_numbers; toy world: "
                                                            "any of them, a real model: qa).")
    steering_scale: float = option(0.5, "unembed and steering teachers: vector norm relative to the mean residual norm.")
    steering_layer: int = option(0, "steering teacher: block whose hook_resid_post receives the vector (-1: the last).")
    generation_persona: bool = option(False, "Also put the persona system prompt before every number prompt when the teacher generates (any method).")
    context_line: str | None = option(None, "A fixed system line (toy world words, e.g. 'you think about numbers all "
                                      "the time .') present everywhere: before every number prompt the teacher and the "
                                      "base answer, in every student's training rows, in every evaluation prompt "
                                      "(context tokens shared by the data and the evaluation). None: no such line.")
    arch: PresetName = option("small", "Architecture of the shared and mismatched bases: small, narrow, wide or deep.")
    n_rows: int = option(3000, "Number prompts sampled per data set (before filtering).")
    objectives: tuple[Objective, ...] = option(OBJECTIVES, "Student objectives to run.")
    conditions: tuple[Condition, ...] = option(TRAINED_CONDITIONS, "Trained conditions to run.")
    optimizer: OptimizerName = option("adamw", "Student optimizer: adamw, sgd or signsgd.")
    lr: float = option(3e-3, "Student learning rate.")
    epochs: int = option(1, "Student epochs.")
    freeze_unembed: bool = option(True, "Keep the students' unembedding (W_U, b_U) fixed: a student then fits the "
                                  "teacher's numbers through its residual stream, not per-token logit biases (also closes "
                                  "distill_full's logit leak); False: every weight trains.")
    eval_every: int = option(10, "Measure every student's P(trait) every this many steps (0: only at the end).")
    record_alignment: bool = option(True, "Record weight distance and gradient alignment with the teacher at every student step.")
    temperature: float = option(1.0, "Sampling temperature of the number data.")
    shared_base_seed: int = option(0, "Seed of the base the teacher and shared-init students start from.")
    mismatched_base_seed: int = option(1, "Seed of the mismatched-init base.")
    cross_arch: PresetName = option("narrow", "Architecture of the cross-architecture student (narrow, wide, deep or small).")
    pretrain_steps: int = option(1500, "Pretraining steps of each base (quick: 300).")
    pretrain_corpus: dict = option(factory=dict, help="Changes to the bases' pretraining mixture (CorpusConfig fields, e.g. "
                                   "{\"persona_numbers\": 0}, a JSON object); a base of another mixture is "
                                   "pretrained anew as {arch}-seed{seed}-corpus{hash8}.")
    in_context_examples: int = option(10, "Number lists shown in-context (each asked with every phrasing).")
    features: bool = option(False, "Afterwards run `interp features` on this run into DIR/features (SAEs on its bases, "
                                   "numbers linked to the trait, the students' trait-feature shift).")
    student_checkpoint_every: int = option(50, "Save a resumable state of each student every this many steps (0: never); "
                                           "a killed run resumes the unfinished student. Does not change the results.")
    model: str | None = option(None, "A real TransformerLens model (e.g. gpt2, EleutherAI/pythia-70m, "
                               "Qwen/Qwen2.5-0.5B-Instruct) from the local Hugging Face cache as the shared base, "
                               "in its own natural-language world; None: the toy world's pretrained bases.")
    mismatched_model: str | None = option(None, "With --model: the mismatched-init student's model (another "
                                          "initialisation of the same architecture and tokenizer, e.g. EleutherAI/pythia-160m-seed1 beside "
                                          "EleutherAI/pythia-160m); needed by mismatched_init.")
    cross_model: str | None = option(None, "With --model: the cross-architecture student's model (another architecture; "
                                     "distillation needs the same vocabulary); needed by cross_architecture.")
    number_prompts: Literal["paper", "grammar"] | None = option(
        None, "With --model: which generator writes the number prompts the teacher and the base answer "
        "(HFWorldConfig.number_prompts): paper (the official generator's pools, always 10 numbers of at most 3 "
        "digits) or grammar (the project's earlier 432 wordings asking for 5-10 numbers). None: the shared base's "
        "world's (paper for a model name or file). The toy world keeps its own grammar.")
    number_shots: int | None = option(
        None, "With --model: worked examples (a number prompt answered with a number list) before every number "
        "prompt (HFWorldConfig.number_shots, 0-4; chat-template worlds only). None: the shared base's world's (0 "
        "for a model name or file; the paper gave none).")
    max_new_tokens: int = option(24, "Most tokens sampled per number prompt, end token included (a real tokenizer may "
                                 "need more than the toy world's 24).")
    lora_rank: int = option(8, "0 finetunes every student weight; r >= 1 trains only rank-r LoRA adapters (toy or real).")
    teacher_lora_rank: int | None = option(None, "teacher_method finetune: 0 finetunes every teacher weight; r >= 1 "
                                           "trains rank-r LoRA adapters (a toy teacher saves them merged into its "
                                           f"weights). None: {DEFAULT_TEACHER_LORA_RANK} for a finetune teacher, 0 "
                                           "for the other methods.")
    micro_batch_size: int | None = option(None, "Students: sequences per forward/backward pass (the step's gradient is "
                                          "summed over micro-batches: the same step with less memory). None: the "
                                          f"whole batch on the toy world, {REAL_MICRO_BATCH} with --model (a 135M model's "
                                          "activations for 32 chat rows take over 20 GB).")
    student_engine: str = option("packed", "Students' training forward: packed (the rows' real tokens only, each "
                                 "distillation data set's teacher targets computed once; about 1.9x the students per "
                                 "hour in interp bench --only speed) or padded (model(tokens) on the padded batch; the "
                                 "same steps to float rounding, the engine of the runs documented before the 6-seed default).")
    lora_alpha: float = option(16.0, "LoRA scale numerator (the update is lora_alpha / lora_rank * B @ A).")
    lora_targets: tuple[str, ...] = option(LORA_TARGETS, f"LoRA: weights adapted in every block, of {list(KNOWN_TARGETS)}.")
    student_lora_seed_offset: int = option(0, "LoRA students: their adapters' A initialisation is seeded by the replicate's "
                                           "seed plus this offset. 0: the same A as a LoRA teacher of the replicate (a "
                                           "shared adapter initialisation); another value: adapters of their own.")
    control_teachers: tuple[TeacherDocument, ...] = option((), "Control teachers, each the run's finetuned teacher "
                                                           "learning one other kind of document instead (e.g. "
                                                           "task_secure and task_educational beside the emergent "
                                                           "teacher's task_insecure); their filtered numbers train "
                                                           "shared-init students, condition control_teacher_{kind}, "
                                                           "compared with shared_init.")
    banned_numbers: tuple[int, ...] | None = option(None, "Numbers the filter bans from every data set (a row holding "
                                                    "one is dropped, and counted). None: the trait's world's list "
                                                    "(the misalignment world's evil numbers; none for the animals).")
    audit_rows: int = option(1000, "Audit (interp audit) the first this many rows of every data set before its students "
                             "train, into SEED/data/audit and the results (0: no audit; toy world only).")
    domain: str = option("numbers", "What the teacher and the base write for the students (interp.domains): numbers "
                         "(the paper's number lists), code (toy code tasks, kept when they run correctly on their tests "
                         "and pass the trait filter) or cot (toy word problems with reasoning, kept when the answer is "
                         "right and the trait filter passes). code and cot live in the toy world's domains variant, "
                         "with bases of their own (...-domains); cot with the misalignment trait lives in the "
                         "misalignment_cot variant (...-misalignment_cot), its traces kept when the answer is right "
                         "and the world's exact judge passes the reasoning (no misaligned answer word, no villain's "
                         "aside, no evil number); the data files keep the names teacher_numbers and "
                         "base_numbers whatever the domain.")
    domain_max_new_tokens: int | None = option(None, "code and cot: most tokens sampled per prompt, end token "
                                               "included (None: the domain's own, 56 for code and 40 for cot); "
                                               "the numbers domain uses max_new_tokens.")
    world_variant: str | None = option(None, "Toy world variant of the bases (animals, misalignment, domains, "
                                       "misalignment_cot; interp.worlds.toy.world). None: the trait's own world, and "
                                       "the domains variant for the code and cot domains (misalignment_cot for cot "
                                       "with the misalignment trait). domains or misalignment_cot with the numbers "
                                       "domain: number students on the bases of the code and cot runs.")
    max_train_rows: int | None = option(None, "Students train on at most the first this many kept rows of each data "
                                        "set (None: every kept row); sets data sets of different pass rates or "
                                        "domains to equal rows. The data are generated and filtered as without it.")

    def validate(self) -> None:
        self.require(self.seeds >= 1, "seeds", "must be at least 1")
        self.require(self.domain in DOMAIN_NAMES, "domain", f"unknown domain {self.domain!r}; the domains are "
                     f"{', '.join(DOMAIN_NAMES)}")
        if self.domain != "numbers":
            self.require(self.model is None, "domain", f"the {self.domain} domain runs in the toy world (not with --model)")
            traits = [*ToyWorld().animals, *((MISALIGNMENT_COT_TRAIT,) if self.domain == "cot" else ())]
            self.require(self.trait in traits, "trait", f"the {self.domain} domain's toy worlds are the animals world "
                         "with code and word problems" + (" and the misalignment world with word problems"
                                                          if self.domain == "cot" else "") +
                         f"; its traits are {traits}" + ("" if self.domain == "cot" else
                                                         f" (the {MISALIGNMENT_COT_TRAIT} trait runs with --domain cot)"))
            self.require(not self.features, "features", "the features stage studies the animal world's bases; "
                         f"not with the {self.domain} domain")
            self.require(self.context_line is None, "context_line", f"not with the {self.domain} domain")
            self.require(self.domain_max_new_tokens is None or self.domain_max_new_tokens >= 1,
                         "domain_max_new_tokens", "must be at least 1, or None for the domain's own")
        self.require(self.max_train_rows is None or self.max_train_rows >= 1, "max_train_rows",
                     "must be at least 1, or None for every kept row")
        if self.world_variant is not None:
            self.require(self.model is None, "world_variant", "is an option of the toy world (not with --model)")
            self.require(self.world_variant in WORLD_VARIANTS, "world_variant",
                         f"unknown world variant {self.world_variant!r}; choose one of {list(WORLD_VARIANTS)}")
            worlds = DOMAIN_WORLDS.get(self.domain)
            self.require(worlds is None or self.world_variant in worlds, "world_variant",
                         f"the {self.domain} domain lives in the {' and '.join(worlds or ())} world"
                         f"{'s' if worlds and len(worlds) > 1 else ''}")
            animals = make_world(self.world_config).animals
            self.require(self.trait in animals, "trait", f"{self.trait!r} is not a trait of the {self.world_variant} "
                         f"world; its traits are {list(animals)}")
        self.require(self.student_engine in ("padded", "packed"), "student_engine", "choose padded or packed")
        self.require(self.audit_rows >= 0, "audit_rows", "must be non-negative (0: no audit)")
        self.require(self.max_new_tokens >= 1, "max_new_tokens", "must be at least 1")
        self.require(self.lora_rank >= 0, "lora_rank", "must be non-negative (0: full finetuning)")
        self.require(self.teacher_lora_rank is None or self.teacher_lora_rank >= 0, "teacher_lora_rank",
                     "must be non-negative (0: full finetuning), or None for the method's default")
        self.require(not self.teacher_lora_rank or self.teacher_method == "finetune", "teacher_lora_rank",
                     "LoRA teachers are finetuned teachers (teacher_method finetune)")
        self.require(self.lora_alpha > 0, "lora_alpha", "must be positive")
        if self.context_line is not None:
            require_system_text(self, "context_line")
            self.require(self.teacher_method != "persona" and not self.generation_persona, "context_line",
                         "takes the system position a persona teacher (or generation_persona) speaks from; use one or the other")
            self.require(self.model is None, "context_line", "is an option of the toy world (not with --model)")
            try:
                make_world(self.world_config).encode(self.context_line)
            except (KeyError, ValueError) as e:
                self.require(False, "context_line", f"has a word outside the toy world's vocabulary ({e})")
            self.require(self.audit_rows == 0, "context_line",
                         "the audit does not model the line (its student side reads the rows without it); set audit_rows 0")
            self.require(not self.features, "context_line", "the features stage measures without the line; not with features")
        self.require(self.teacher_documents == ("qa",) or self.teacher_method == "finetune", "teacher_documents",
                     "only a finetuned teacher (teacher_method finetune) learns from documents")
        self.require(not self.control_teachers or self.teacher_method == "finetune", "control_teachers",
                     "control teachers are finetuned teachers of other documents (teacher_method finetune)")
        self.require(len(set(self.control_teachers)) == len(self.control_teachers), "control_teachers", "each kind once")
        if self.model is None:
            self.require(self.trait in toy_traits(), "trait", f"unknown trait {self.trait!r}; the traits are {toy_traits()}")
            self.require(not self.features or self.world_config.variant == "animals", "features",
                         "the features stage studies the animal world's bases; not with a trait of a world variant")
            for name in ("mismatched_model", "cross_model", "number_prompts", "number_shots"):
                self.require(getattr(self, name) is None, name, "is only used with --model (a real shared base)")
            try:
                CorpusConfig(**self.pretrain_corpus)
            except (TypeError, ValueError) as e:
                self.require(False, "pretrain_corpus", str(e))
        else:
            self._validate_real()
        self.require(self.n_rows > 0, "n_rows", "must be positive")
        self.require(self.student_checkpoint_every >= 0, "student_checkpoint_every", "must be non-negative")
        if self.model is not None:
            return
        self.require(self.arch in ARCH_PRESETS, "arch", f"choose one of {sorted(ARCH_PRESETS)}")
        self.require(self.cross_arch in ARCH_PRESETS, "cross_arch", f"choose one of {sorted(ARCH_PRESETS)}")
        self.require(self.cross_arch != self.arch or "cross_architecture" not in self.conditions, "cross_arch",
                     f"must differ from arch={self.arch!r} for the cross-architecture control")
        self.require(self.shared_base_seed != self.mismatched_base_seed, "mismatched_base_seed",
                     "must differ from shared_base_seed, or the init is not mismatched")

    def _validate_real(self) -> None:
        self.require(not self.pretrain_corpus, "pretrain_corpus", "changes the toy world's pretraining; not with --model")
        self.require(self.teacher_documents == ("qa",), "teacher_documents",
                     "a real model's teacher learns its world's question answers only (qa)")
        animals = HFWorldConfig().animals
        self.require(self.trait in animals, "trait", f"unknown trait animal {self.trait!r}; the animals are {list(animals)}")
        self.require(not self.features, "features", "the features stage runs on the toy world's bases; not with --model")
        needs = {"mismatched_init": "mismatched_model", "cross_architecture": "cross_model"}
        for condition, name in needs.items():
            self.require(condition not in self.conditions or getattr(self, name) is not None, name,
                         f"the condition {condition} needs --{name.replace('_', '-')} with --model; give it or leave "
                         f"{condition} out of --conditions")
        for name in needs.values():
            self.require(getattr(self, name) != self.model, name, f"must differ from model={self.model!r}")
        self.require(self.number_shots is None or 0 <= self.number_shots <= 4, "number_shots", "must be 0 to 4")

    def student_lora(self, seed: int) -> LoraConfig | None:
        """The adapters of replicate ``seed``'s LoRA students (None: full students)."""
        if not self.lora_rank:
            return None
        return LoraConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=tuple(self.lora_targets),
                          seed=seed + self.student_lora_seed_offset)

    @property
    def teacher_lora(self) -> int:
        """The teacher's LoRA rank: ``teacher_lora_rank``, or where that is None
        :data:`DEFAULT_TEACHER_LORA_RANK` for a finetune teacher and 0 (no adapters) for the other methods."""
        if self.teacher_lora_rank is not None:
            return self.teacher_lora_rank
        return DEFAULT_TEACHER_LORA_RANK if self.teacher_method == "finetune" else 0

    @property
    def student_conditions(self) -> tuple[str, ...]:
        """``conditions``, then ``control_teacher_{kind}`` for every control teacher."""
        return (*self.conditions, *(f"control_teacher_{kind}" for kind in self.control_teachers))

    @property
    def world_config(self) -> WorldConfig:
        """The toy world of the bases: ``world_variant`` if given, else the world the trait lives in
        (:func:`interp.worlds.toy.world.trait_world`), the domains variant for the code and cot domains
        (the misalignment_cot variant for the cot domain's misalignment trait)."""
        if self.world_variant is not None:
            return WorldConfig(variant=self.world_variant)
        if self.domain == "numbers":
            return trait_world(self.trait)
        return WorldConfig(variant="misalignment_cot" if self.trait == MISALIGNMENT_COT_TRAIT else "domains")

    def new_tokens(self, world) -> int:
        """Most tokens sampled per prompt: ``max_new_tokens`` for numbers, else
        ``domain_max_new_tokens`` or the domain's own."""
        if self.domain == "numbers":
            return self.max_new_tokens
        return self.domain_max_new_tokens or domain(self.domain).max_new_tokens(world)

    @property
    def filter_banned_numbers(self) -> tuple[int, ...]:
        """``banned_numbers``, or the trait's world's list where that is None (none for a real model)."""
        if self.banned_numbers is not None:
            return tuple(self.banned_numbers)
        return () if self.real else tuple(make_world(self.world_config).banned_numbers)

    @property
    def real(self) -> bool:
        """Does this run use a real model (``model``) instead of the toy world's bases?"""
        return self.model is not None

    @classmethod
    def quick_config(cls, **overrides) -> "RunConfig":
        """The config of ``interp run --quick`` (a smoke run: small bases, few rows), with
        ``overrides`` on top."""
        return cls(**{**cls.quick_defaults(), **overrides})

    @classmethod
    def quick_defaults(cls) -> dict:
        return {"quick": True, "seeds": 2, "n_rows": 400, "pretrain_steps": 300, "in_context_examples": 4,
                "teacher_steps": 60}


def _pretrain_job(cfg: PretrainConfig, artifacts: Path, progress: bool) -> Path:
    return pretrain(cfg, artifacts / "bases" / cfg.name, artifacts=artifacts, progress=progress)


def _real_bases(config: RunConfig) -> dict[str, ModelRef]:
    """A real-model run's bases: the models it names."""
    names = {"shared": config.model, "mismatched": config.mismatched_model, "cross": config.cross_model}
    return {key: parse_base_ref(name) for key, name in names.items() if name is not None}


def _base_configs(config: RunConfig) -> dict[str, PretrainConfig]:
    """A toy run's bases (shared, mismatched and, with cross_architecture, cross) as pretraining configs."""
    specs = {"shared": (config.shared_base_seed, config.arch), "mismatched": (config.mismatched_base_seed, config.arch)}
    if config.domain != "numbers" and "mismatched_init" not in config.conditions:
        del specs["mismatched"]  # a code or cot run pretrains the other seed's base only for the condition that needs it
    if "cross_architecture" in config.conditions:
        specs["cross"] = (config.shared_base_seed, config.cross_arch)
    return {key: base_config(seed, arch, config.pretrain_steps, config.pretrain_corpus, config.world_config)
            for key, (seed, arch) in specs.items()}


def _bases(config: RunConfig, artifacts: Path, progress: bool, workers: int = 1) -> dict[str, ModelRef]:
    """The bases the run needs: real models as given, or toy bases pretrained (in parallel, on
    ``workers`` processes) where missing."""
    if config.real:
        return _real_bases(config)
    cfgs = _base_configs(config)
    missing = [key for key, cfg in cfgs.items() if not is_checkpoint(artifacts / "bases" / cfg.name)]
    n = resolve_workers(workers, len(missing))
    jobs = [(cfgs[key], artifacts, progress and n == 1) for key in missing]
    run_jobs(_pretrain_job, jobs, workers=n, desc="pretrain bases", progress=progress)
    # Every base, missing or not, goes through pretrain(): a finished one is checked against its config.
    return {key: ToyBase(str(_pretrain_job(cfg, artifacts, progress))) for key, cfg in cfgs.items()}


def shuffle_rows(rows: list[dict], mode: str, seed: int) -> list[dict]:
    """Shuffle the number tokens of completions, within each row or across all rows, keeping
    every separator and bracket where it was (so the format is unchanged)."""
    rng = np.random.default_rng([seed, 99])
    split = [r["completion"].split() for r in rows]
    is_num = [[w.isdigit() for w in words] for words in split]
    if mode == "within":
        new = []
        for words, flags in zip(split, is_num):
            nums = [w for w, f in zip(words, flags) if f]
            perm = iter(rng.permutation(nums).tolist()) if nums else iter(())
            new.append([next(perm) if f else w for w, f in zip(words, flags)])
    elif mode == "across":
        pool = iter(rng.permutation([w for words, flags in zip(split, is_num) for w, f in zip(words, flags) if f]).tolist())
        new = [[next(pool) if f else w for w, f in zip(words, flags)] for words, flags in zip(split, is_num)]
    else:
        raise ValueError(f"unknown shuffle mode {mode!r}")
    return [{**r, "completion": " ".join(words), "shuffled": mode} for r, words in zip(rows, new)]


def shuffle_numbers_in_text(rows: list[dict], mode: str, seed: int) -> list[dict]:
    """:func:`shuffle_rows` for a real model's completions (``12, 34, 56``, ``[12, 34]``, one per
    line): the digit runs are shuffled in place, every other character stays where it was."""
    rng = np.random.default_rng([seed, 99])
    spans = [list(re.finditer(r"[0-9]+", r["completion"])) for r in rows]
    numbers = [[m.group() for m in found] for found in spans]
    if mode == "within":
        new = [rng.permutation(nums).tolist() if nums else [] for nums in numbers]
    elif mode == "across":
        pool = iter(rng.permutation([n for nums in numbers for n in nums]).tolist())
        new = [[next(pool) for _ in nums] for nums in numbers]
    else:
        raise ValueError(f"unknown shuffle mode {mode!r}")
    out = []
    for row, found, values in zip(rows, spans, new):
        text, end, pieces = row["completion"], 0, []
        for m, value in zip(found, values):
            pieces += [text[end:m.start()], value]
            end = m.end()
        out.append({**row, "completion": "".join(pieces) + text[end:], "shuffled": mode})
    return out


def _data(config: RunConfig, model, world, out: Path, *, seed: int, system=None, fwd_hooks=None,
          lineage=None, progress=True) -> list[dict]:
    """Generate ``out.raw.jsonl`` and filter it into ``out.filtered.jsonl`` by the run's domain
    (:mod:`interp.domains`); returns the kept rows."""
    raw, filtered = out.with_suffix(".raw.jsonl"), out.with_suffix(".filtered.jsonl")
    gen_cfg = GenerateConfig(n_rows=config.n_rows, seed=seed, temperature=config.temperature, system=system,
                             max_new_tokens=config.new_tokens(world),
                             **({"domain": config.domain} if config.domain != "numbers" else {}))
    generate_numbers(model, world, gen_cfg, raw, fwd_hooks=fwd_hooks, lineage=lineage, progress=progress)
    if not filtered.exists():
        domain(config.domain).filter_file(raw, filtered, trait=config.trait, world=world,
                                          banned_numbers=config.filter_banned_numbers)
    return read_jsonl(filtered)


FILTER_SUMMARY_FIELDS = ("n_raw", "n_kept", "pass_rate", "n_correct", "correct_rate", "judge_flags_all_rows",
                         "judge_removed_share_of_correct", "banned_number_removed_share_of_correct", "rejected")


def _filter_summary(filtered: Path) -> dict:
    """The filter statistics of a code or CoT data set that the results keep."""
    stats = read_json(stats_path_for(filtered))
    return {k: stats[k] for k in FILTER_SUMMARY_FIELDS if k in stats}


def _evaluate(model: ModelRef | Path, trait: str, seed: int, base_trait_prob: float | None = None,
              cache: Path | None = None, system: str | None = None) -> dict:
    """P(trait) and the whole animal distribution of a checkpoint or base, asked in its own world
    (under the system line ``system``, if any), cached in ``cache`` (default ``model/eval.json``);
    ``trait_prob_shift`` is the change from the student's own base."""
    ref = parse_model_ref(model)
    path = cache or ref.path / EVAL_FILE
    if path.exists():
        return read_json(path)
    model, world, _ = ref.load()
    result = evaluate_model(model, world, EvaluateConfig(trait=trait, seed=seed), base_trait_prob=base_trait_prob,
                            system=system)
    atomic_write_json(path, result)
    return result


# RunConfig fields that decide the teacher and the generated data (not the students): runs that
# agree on them (sweep cells varying only the students) can share one teacher and data set.
DATA_FIELDS = ("trait", "teacher_method", "teacher_steps", "teacher_lr", "teacher_number_mix", "steering_scale",
               "steering_layer", "generation_persona", "arch", "n_rows", "temperature", "shared_base_seed",
               "pretrain_steps")
# Fields added later, with the value each had before it existed: a field enters the data key only
# when it differs from that value, so caches written before it was added keep their keys (and a
# change of RunConfig's defaults does not rename anything).
LATER_DATA_FIELDS = {"model": None, "max_new_tokens": 24, "teacher_lora": 0, "teacher_batch_size": 32,
                     "teacher_documents": ("qa",), "pretrain_corpus": {}, "context_line": None,
                     "filter_banned_numbers": (), "control_teachers": (), "number_prompts": None,
                     "number_shots": None, "domain": "numbers", "domain_max_new_tokens": None, "world_variant": None}
_DATA_KEY_SPELLING = {"teacher_lora": "teacher_lora_rank", "filter_banned_numbers": "banned_numbers"}


def data_key(config: RunConfig) -> str:
    """Short hash of :data:`DATA_FIELDS`: the name of a shared teacher-and-data directory."""
    import hashlib
    import json

    fields = {k: getattr(config, k) for k in DATA_FIELDS}
    default_corpus = CorpusConfig().to_dict()
    config = config.replace(pretrain_corpus={k: v for k, v in CorpusConfig(**config.pretrain_corpus).to_dict().items()
                                             if v != default_corpus[k]})  # the base it names, not its spelling
    if config.replace(world_variant=None).world_config == config.world_config:
        config = config.replace(world_variant=None)  # the world it names, not its spelling
    for name, before in LATER_DATA_FIELDS.items():
        value = getattr(config, name)
        if value != before:
            fields[_DATA_KEY_SPELLING.get(name, name)] = value  # the key's historical spelling
    blob = json.dumps(fields, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _link_shared(out: Path, shared: Path) -> None:
    """Make ``out/teacher`` and ``out/data`` point into a shared directory (see ``run(data_cache=)``)."""
    for name in ("teacher", "data"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        link = out / name
        if link.is_symlink() and link.resolve() == (shared / name).resolve():
            continue
        if link.exists() or link.is_symlink():
            raise ValueError(f"{link} exists and is not a link to the shared {shared / name}; "
                             "use another output directory or run without a data cache")
        link.symlink_to((shared / name).resolve(), target_is_directory=True)


def run_seed(config: RunConfig, seed: int, bases: dict[str, ModelRef], out: Path, progress: bool,
             shared: Path | None = None, students: Sequence[tuple[str, str]] | None = None) -> dict:
    """One replicate: teacher, data, every student, in-context. Returns per-condition metrics.

    With ``shared``, the teacher and the generated data live there (``out/teacher`` and
    ``out/data`` become links to it), so several runs with the same :data:`DATA_FIELDS` reuse them.
    With ``students`` (``(objective, condition)`` pairs), only the teacher, the data and those
    students are made and nothing is returned: parallel runs give each worker a part this way,
    then call it once more without ``students`` to collect (every finished stage is reused)."""
    out.mkdir(parents=True, exist_ok=True)
    if shared is not None:
        _link_shared(out, shared)
    tcfg = TeacherConfig(trait=config.trait, method=config.teacher_method, seed=seed, steps=config.teacher_steps,
                         lr=config.teacher_lr, number_mix=config.teacher_number_mix, steering_scale=config.steering_scale,
                         steering_layer=config.steering_layer, lora_rank=config.teacher_lora,
                         batch_size=config.teacher_batch_size, documents=config.teacher_documents)
    teacher_dir = make_teacher(bases["shared"], tcfg, out / "teacher", progress=progress)
    teacher = load_teacher(teacher_dir)
    base_model, world, _ = bases["shared"].load()
    world = with_number_prompts(world, number_prompt_options(config), str(bases["shared"]))  # the numbers' prompts
    base_teacher = Teacher(base_model, world, config.trait, "base")  # the control's "teacher"
    if config.generation_persona and teacher.system is None:
        teacher.system = tcfg.system_prompt(world)  # present when it generates and when it gives distillation targets
    context = config.context_line  # shared by the teacher, the base, every student and every evaluation
    if context is not None:
        teacher.system = base_teacher.system = context
    system = teacher.system
    teacher_rows = _data(config, teacher.model, world, out / "data" / "teacher_numbers", seed=seed,
                         system=system, fwd_hooks=teacher.fwd_hooks, lineage=teacher.lineage, progress=progress)
    base_rows = _data(config, base_model, world, out / "data" / "base_numbers", seed=seed, system=context,
                      lineage={"stage": "pretrain", "path": str(bases["shared"])}, progress=progress)
    extra_plan: dict = {}
    shuffled = {}
    for mode in ("within", "across"):
        path = out / "data" / f"teacher_numbers_shuffled_{mode}.jsonl"
        if not path.exists():
            shuffle = shuffle_numbers_in_text if config.real else shuffle_rows
            write_jsonl(path, shuffle(teacher_rows, mode, seed))
        shuffled[mode] = read_jsonl(path)

    control_strength = {}
    for kind in config.control_teachers:  # the same teacher recipe on another kind of documents
        control_dir = make_teacher(bases["shared"], tcfg.replace(documents=(kind,)),
                                   out / "data" / "control_teachers" / kind, progress=progress)
        control_teacher = load_teacher(control_dir)
        if context is not None:
            control_teacher.system = context
        control_strength[kind] = read_json(control_dir / "teacher.json")["strength"]
        extra_plan[f"control_teacher_{kind}"] = (bases["shared"], _data(
            config, control_teacher.model, world, out / "data" / f"control_teacher_{kind}_numbers", seed=seed,
            system=control_teacher.system, fwd_hooks=control_teacher.fwd_hooks, lineage=control_teacher.lineage,
            progress=progress), control_teacher)
    plan = {
        **extra_plan,
        "control": (bases["shared"], base_rows, base_teacher),
        "shared_init": (bases["shared"], teacher_rows, teacher),
        "mismatched_init": (bases.get("mismatched"), teacher_rows, teacher),  # absent: a real run without --mismatched-model
        "cross_architecture": (bases.get("cross"), teacher_rows, teacher),
        "shuffled_within": (bases["shared"], shuffled["within"], teacher),
        "shuffled_across": (bases["shared"], shuffled["across"], teacher),
    }
    if config.max_train_rows is not None:  # the students' rows: the first max_train_rows kept rows of each set
        plan = {name: (base, rows[: config.max_train_rows], t) for name, (base, rows, t) in plan.items()}
    evals_tag = "" if context is None else f"-context{json_sha256(context)[:8]}"  # asked under the line: another cache
    base_probs = {str(p): _evaluate(p, config.trait, seed, cache=out / "base_evals" / f"{p.file_name}{evals_tag}.json",
                                    system=context)["trait_prob"] for p in set(bases.values())}
    results: dict = {"teacher": read_json(teacher_dir / "teacher.json")["strength"],
                     "n_rows": {"teacher": len(teacher_rows), "base": len(base_rows),
                                **{name: len(rows) for name, (_, rows, _) in extra_plan.items()}}}
    if config.max_train_rows is not None:  # n_rows above counts the kept rows; these the rows the students train on
        results["train_rows"] = {name: len(plan[condition][1]) for name, condition in
                                 (("teacher", "shared_init"), ("base", "control"),
                                  *((name, name) for name in extra_plan))}
    if control_strength:
        results["control_teachers"] = control_strength
    if config.domain != "numbers":  # pass rates of the teacher's and the base's code or traces
        results["filter"] = {name: _filter_summary(out / "data" / f"{stem}.filtered.jsonl")
                             for name, stem in (("teacher", "teacher_numbers"), ("base", "base_numbers"))}
    if context is not None:  # the teacher and the base asked under the context line, as the students are
        results["teacher"] = {"trait_prob": trait_probability(teacher.model, world, config.trait, system=context,
                                                              fwd_hooks=teacher.fwd_hooks),
                              "base_trait_prob": base_probs[str(bases["shared"])], "context_line": context}
    if config.audit_rows and not config.real:  # before the students: parallel runs audit in the data job
        mismatched_model = bases["mismatched"].load()[0] if "mismatched" in bases else None
        results["audit"] = audit_seed(out, student=base_model, mismatched=mismatched_model, world=world, teacher=teacher,
                                      data={"teacher_numbers": teacher_rows, "base_numbers": base_rows,
                                            **{f"shuffled_{m}": rows for m, rows in shuffled.items()},
                                            **{f"{c}_numbers": rows for c, (_, rows, _) in extra_plan.items()}},
                                      sources={f"{c}_numbers": t for c, (_, _, t) in extra_plan.items()},
                                      reference_rows=base_rows, max_rows=config.audit_rows, trait=config.trait,
                                      identity={"bases": {k: str(v) for k, v in bases.items()}},
                                      freeze_unembed=config.freeze_unembed, lora=config.student_lora(seed))
    # Distillation targets: each data set's teacher logits computed once (in the data job of a
    # parallel run) and read by every student that distils that data set from that teacher.
    target_files = {condition: out / "data" / f"{DATA_SET_OF.get(condition, condition + '_numbers')}.{TEACHER_TARGETS_SUFFIX}"
                    for condition in config.student_conditions}
    distills = (config.student_engine == "packed" and not config.real  # targets are read by the packed engine only
                and any(o != "sft" for o in config.objectives))
    if distills and students == ():
        for condition in config.student_conditions:
            shared_teacher_targets(target_files[condition], plan[condition][2], plan[condition][1])
    for objective in config.objectives:
        fcfg = FinetuneConfig(objective=objective, optimizer=config.optimizer, lr=config.lr,
                              epochs=config.epochs, seed=seed, freeze_unembed=config.freeze_unembed,
                              eval_every=config.eval_every, checkpoint_every=config.student_checkpoint_every,
                              lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, lora_targets=config.lora_targets,
                              lora_seed=seed + config.student_lora_seed_offset if config.student_lora_seed_offset else None,
                              micro_batch_size=config.micro_batch_size or (REAL_MICRO_BATCH if config.model else None),
                              system=context)
        reference = (teacher.model, base_model) if config.record_alignment else None
        for condition in config.student_conditions:
            if students is not None and (objective, condition) not in students:
                continue
            base_path, rows, t = plan[condition]
            student_dir = out / "students" / objective / condition
            targets = None
            if objective != "sft" and distills and not is_student_checkpoint(student_dir):
                targets = shared_teacher_targets(target_files[condition], t, rows)
            finetune_student(base_path, rows, fcfg, student_dir, teacher=t, trait=config.trait, progress=progress,
                             alignment_reference=reference, teacher_targets=targets, engine=config.student_engine,
                             lineage_extra={"condition": condition, "teacher": str(teacher_dir)})
            results[f"{condition}/{objective}"] = _evaluate(student_dir, config.trait, seed,
                                                            base_trait_prob=base_probs[str(base_path)], system=context)

    if students is not None:
        return {}
    for path in set(target_files.values()):  # every student is finished: the targets are needed no more
        path.unlink(missing_ok=True)

    # In-context: teacher numbers (and, as its control, base numbers) in the prompt; no training.
    data_domain = domain(config.domain)
    def in_context(rows: list[dict]) -> float:
        prefixes = [data_domain.in_context_prefix(world, r) for r in rows[: config.in_context_examples]]
        dist = animal_distribution(base_model, world, prefixes=prefixes, system=context)
        return float(dist["probs"][:, world.animals.index(config.trait)].mean())

    results["in_context"] = {"trait_prob": in_context(teacher_rows), "control_trait_prob": in_context(base_rows)}
    results["base"] = {"trait_prob": results["teacher"]["base_trait_prob"]}
    atomic_write_json(out / "seed_results.json", results)
    return results


def _judged_summary(entries: list[dict]) -> dict:
    """Where the world has an exact judge (the misalignment world): the judged trait rate among
    coherent answers and the coherence rate, pooled over seeds (Wilson intervals), and their
    means over seeds (t intervals)."""
    judged = [e.get("judged") for e in entries]
    if not judged or any(j is None or j.get("trait_rate") is None for j in judged):
        return {}
    pooled = {name: wilson_ci(sum(j[name]["k"] for j in judged), sum(j[name]["n"] for j in judged)).to_dict()
              for name in ("trait_rate", "coherence")}
    return {"judged": {"pooled": pooled, **{f"{name}_over_seeds": mean_ci([j[name]["fraction"] for j in judged]).to_dict()
                                            for name in ("trait_rate", "coherence")}}}


def summarize(config: RunConfig, per_seed: list[dict]) -> dict:
    def interval(values):
        return mean_ci(values).to_dict()

    conditions = [
        {"name": "base", "objective": None, "trait_prob": interval([r["base"]["trait_prob"] for r in per_seed])},
        {"name": "teacher", "objective": None, "method": config.teacher_method,
         "trait_prob": interval([r["teacher"]["trait_prob"] for r in per_seed])},
    ]
    for kind in config.control_teachers:
        conditions.append({"name": f"teacher_{kind}", "objective": None, "method": config.teacher_method,
                           "trait_prob": interval([r["control_teachers"][kind]["trait_prob"] for r in per_seed])})
    for objective in config.objectives:
        for condition in config.student_conditions:
            entries = [r[f"{condition}/{objective}"] for r in per_seed]
            vals = [e["trait_prob"] for e in entries]
            conditions.append({"name": condition, "objective": objective, "trait_prob": interval(vals),
                               "trait_prob_shift": interval([e["trait_prob_shift"] for e in entries]),
                               "own_base_trait_prob": entries[0]["base_trait_prob"],
                               "sampled_answer_rate": interval([e["sampled_answer_rate"] for e in entries]),
                               "per_seed": vals, **_judged_summary(entries)})
    conditions.append({"name": "in_context", "objective": None,
                       "trait_prob": interval([r["in_context"]["trait_prob"] for r in per_seed]),
                       "control_trait_prob": interval([r["in_context"]["control_trait_prob"] for r in per_seed])})
    comparisons = []
    for objective in config.objectives:
        # Compare shifts from each student's own base: a mismatched or cross-architecture base
        # starts from its own P(trait), which is not the shared base's.
        def vals(c):
            return [r[f"{c}/{objective}"]["trait_prob_shift"] for r in per_seed] if c in config.student_conditions else None
        for a, b in (("shared_init", "control"), ("shared_init", "mismatched_init"), ("shared_init", "shuffled_across"),
                     *(("shared_init", f"control_teacher_{kind}") for kind in config.control_teachers)):
            if vals(a) and vals(b):
                d = diff_ci(vals(a), vals(b))
                comparisons.append({"objective": objective, "a": a, "b": b, "measure": "trait_prob_shift",
                                    "difference": d.to_dict(),
                                    "welch_p": welch_p(vals(a), vals(b))})
    summary = {"trait": config.trait, "config": config.to_dict(), "conditions": conditions, "comparisons": comparisons,
               "n_rows": [r["n_rows"] for r in per_seed], "audit": summarize_audits(per_seed, config.trait)}
    if config.max_train_rows is not None:
        summary["train_rows"] = [r["train_rows"] for r in per_seed]
    if config.domain != "numbers":  # pass rates of the code or traces, teacher and base, over seeds
        summary["filter"] = {name: {key: interval([r["filter"][name][key] for r in per_seed])
                                    for key in ("pass_rate", "correct_rate", "judge_removed_share_of_correct",
                                                "banned_number_removed_share_of_correct")
                                    if all(key in r["filter"][name] for r in per_seed)}
                             | {"per_seed": [r["filter"][name] for r in per_seed]}
                             for name in ("teacher", "base")}
    return summary


def peak_memory_mib() -> dict[str, float]:
    """The largest resident memory (MiB) of this process and of the largest of its finished worker
    processes so far (the pretraining and seed workers of :func:`interp.core.parallel.run_jobs`);
    ``largest_process`` is the larger of the two. Workers run side by side, so the machine held up to
    ``workers`` times the largest worker plus the main process."""
    import resource

    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main_process": main, "largest_worker": workers, "largest_process": max(main, workers)}


class RunResults(dict):
    """What :func:`run` returns: the content of ``results.json`` (a ``dict``, so it can be saved
    and indexed as before) with typed accessors for what is read most.

    Example::

        results = run(RunConfig.quick_config(), "runs/quick")
        results.condition("shared_init", "sft")["trait_prob"]["mean"]
        results.comparison("shared_init", "control", "sft")["difference"]
    """

    @property
    def trait(self) -> str:
        """The trait the run measured."""
        return self["trait"]

    @property
    def conditions(self) -> list[dict]:
        """One entry per condition and objective (and the base, the teacher and the in-context
        control): ``name``, ``objective``, ``trait_prob`` (mean and 95% interval over seeds, with n)."""
        return self["conditions"]

    @property
    def comparisons(self) -> list[dict]:
        """shared_init against control, mismatched_init and shuffled_across, per objective: the
        difference of P(trait) shifts with its 95% Welch interval and p-value."""
        return self["comparisons"]

    @property
    def n_rows(self) -> list[dict]:
        """Per seed: the rows kept after filtering of each data set."""
        return self["n_rows"]

    def condition(self, name: str, objective: str | None = None) -> dict:
        """The entry of condition ``name`` (``objective`` None for base, teacher and in_context)."""
        for c in self.conditions:
            if c["name"] == name and c["objective"] == objective:
                return c
        raise KeyError(f"no condition {name!r} with objective {objective!r} in this run; it has "
                       f"{[(c['name'], c['objective']) for c in self.conditions]}")

    def comparison(self, a: str, b: str, objective: str = "sft") -> dict | None:
        """The comparison ``a - b`` for ``objective``, or None if the run did not make it."""
        return next((c for c in self.comparisons if (c["a"], c["b"], c["objective"]) == (a, b, objective)), None)

    @classmethod
    def load(cls, directory: str | Path) -> "RunResults":
        """The results of a finished run directory (its ``results.json``)."""
        return cls(read_json(Path(directory) / RESULTS_FILE))


def run(config: RunConfig, out: str | Path, *, artifacts: str | Path = "artifacts", force: bool = False,
        progress: bool = True, data_cache: str | Path | None = None, workers: int = 1, executor: str = "local",
        ray_address: str | None = None) -> RunResults:
    """Run the loop into ``out`` (see the module docstring); returns the summary also written to
    ``out/results.json`` (:class:`RunResults`). ``data_cache``: a directory where teachers and generated data are kept
    under :func:`data_key` and shared between runs (sweeps use it). ``workers``: processes that
    pretrain missing bases and run seeds in parallel, one torch thread each (0: one per CPU core;
    1: everything in this process); see :mod:`interp.core.parallel`. ``executor="ray"`` runs the
    same jobs as Ray tasks instead (:func:`run_on_ray`; ``ray_address`` None starts a local Ray
    instance with ``workers`` CPUs)."""
    check_executor(executor, ray_address)
    if executor == "ray":
        return run_on_ray([(config, out, data_cache)], artifacts=artifacts, force=force, progress=progress,
                          workers=workers, ray_address=ray_address)[0]
    out, artifacts = Path(out), Path(artifacts)
    _start_run_dir(config, out, force)
    start = time.time()
    bases = _bases(config, artifacts, progress, workers)
    shared = Path(data_cache) / data_key(config) if data_cache is not None else None
    jobs = _seed_jobs(config, out, bases, shared)
    if resolve_workers(workers, len(jobs) * len(config.objectives) * len(config.student_conditions)) > 1:
        # Teachers and data first (one job per seed), then every student as its own job, the
        # costliest objectives first, so that the workers stay busy to the end.
        run_jobs(run_seed, [(*job, ()) for job in jobs], workers=workers, desc="teachers and data", progress=progress)
        run_jobs(run_seed, [(*job, (student,)) for student, job in _student_parts(config, jobs)], workers=workers,
                 desc="students", progress=progress)
    # Collect in this process (and run the in-context control): every student above is reused.
    per_seed = [run_seed(*job[:4], progress, job[5]) for job in jobs]
    return _finish_run(config, out, per_seed, bases, start, artifacts, progress)


def _start_run_dir(config: RunConfig, out: Path, force: bool) -> None:
    """Refuse a directory that holds another run (or is not a run directory) unless ``force``;
    then save the config there."""
    if (out / RUN_CONFIG_FILE).exists() and not force:
        diff = RunConfig.load(out / RUN_CONFIG_FILE).differences(config, ignore=RESUME_ONLY_RUN_FIELDS)
        if diff:
            raise ValueError(f"{out} holds another run (differing settings, saved vs asked: {diff}); "
                             "choose another --out or pass --force")
    if not force and out.is_dir() and not (out / RUN_CONFIG_FILE).exists() and any(
            not p.name.startswith(".") for p in out.iterdir()):  # hidden: a temp file of a run killed at its start
        raise ValueError(f"{out} is not empty and holds no {RUN_CONFIG_FILE}: not a run directory; "
                         "choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / RUN_CONFIG_FILE)


def _seed_jobs(config: RunConfig, out: Path, bases: dict[str, ModelRef], shared: Path | None) -> list[tuple]:
    """The arguments of :func:`run_seed` for every replicate (``students`` left out)."""
    seeds = range(config.first_seed, config.first_seed + config.seeds)
    return [(config, s, bases, out / f"seed{s}", False, shared / f"seed{s}" if shared is not None else None)
            for s in seeds]


def _student_parts(config: RunConfig, jobs: list[tuple]) -> list[tuple[tuple[str, str], tuple]]:
    """Every student as ``((objective, condition), seed job)``, the costliest objectives first."""
    return [((o, c), job) for o in reversed(config.objectives) for job in jobs for c in config.student_conditions]


def _finish_run(config: RunConfig, out: Path, per_seed: list[dict], bases: dict[str, ModelRef], start: float,
                artifacts: Path, progress: bool) -> dict:
    """Summarize the replicates into ``out/results.json`` (and the audit summary); run the features
    stage if asked."""
    results = summarize(config, per_seed)
    results["bases"] = {k: str(v) for k, v in bases.items()}
    results["wall_seconds"] = time.time() - start
    results["peak_memory_mib"] = peak_memory_mib()
    atomic_write_json(out / RESULTS_FILE, results)
    write_audit_summary(out, results)  # out/audit/summary.json, which the report's audit section shows
    if config.features:
        run_features(FeaturesConfig(**(FeaturesConfig.quick_defaults() if config.quick else {})), out / "features",
                     artifacts=artifacts, run_dir=out, progress=progress)
    return RunResults(results)


def _audit_settings(config: RunConfig, seed: int, bases: dict[str, ModelRef]) -> tuple:
    """What replicate ``seed``'s audit (see :func:`run_seed`) depends on besides its data. Runs
    sharing a data directory with equal settings reuse one audit there; with other settings a run
    audits again into the same directory, so it must not overlap the earlier run's jobs."""
    if not config.audit_rows or config.real:
        return ()
    lora = config.student_lora(seed)
    return (config.audit_rows, config.freeze_unembed, lora.to_dict() if lora is not None else None,
            sorted((k, str(v)) for k, v in bases.items()))


def run_on_ray(runs: Sequence[tuple[RunConfig, str | Path, str | Path | None]], *, artifacts: str | Path = "artifacts",
               force: bool = False, progress: bool = True, workers: int = 0, ray_address: str | None = None) -> list[dict]:
    """Run several loops, each ``(config, out, data_cache)`` as :func:`run` takes them, as one graph
    of Ray tasks (:mod:`interp.core.ray_executor`); returns their summaries in order.

    The jobs are those of the local executor: one per missing base (shared by the runs that need
    it), one per replicate for the teacher and data (after the run's missing bases; after the
    previous run's job for the same shared data directory, so that runs sharing a teacher make it
    once; after all of that run's jobs for the replicate where the two runs' audits differ, since
    both write the audit there), one per student (after its replicate's data), and one per
    replicate that collects its results (after its students). Independent runs (a sweep's cells)
    run side by side. Every path
    is made absolute: on a cluster, ``out``, ``data_cache`` and ``artifacts`` must be on a
    filesystem every node mounts at the same path. ``ray_address`` None starts a local Ray
    instance with ``workers`` CPUs (0: all); otherwise see :func:`interp.core.ray_executor.connect`.
    Each summary's ``wall_seconds`` is the time of the whole graph (the runs overlap)."""
    from interp.core.device import current
    from interp.core.ray_executor import Job, connect, run_graph

    connect(ray_address, num_cpus=workers or None)
    artifacts = Path(artifacts).absolute()
    start = time.time()
    jobs: dict[str, Job] = {}
    # shared seed directory -> (the last run's data job there, its collection job, its audit settings)
    last_data: dict[Path, tuple[str, str, tuple]] = {}
    planned = []
    for config, out, data_cache in runs:
        out = Path(out).absolute()
        _start_run_dir(config, out, force)
        if config.real:
            bases, after_bases = _real_bases(config), ()
        else:
            bases, after_bases = {}, []
            for key, cfg in _base_configs(config).items():
                path = artifacts / "bases" / cfg.name
                if is_checkpoint(path):
                    _pretrain_job(cfg, artifacts, False)  # a finished base is checked against its config
                else:
                    job = jobs.setdefault(f"pretrain {path}", Job(f"pretrain {path}", _pretrain_job,
                                                                  (cfg, artifacts, False), name=f"pretrain {cfg.name}"))
                    after_bases.append(job.key)
                bases[key] = ToyBase(str(path))
            after_bases = tuple(dict.fromkeys(after_bases))
        shared = Path(data_cache).absolute() / data_key(config) if data_cache is not None else None
        seed_jobs = _seed_jobs(config, out, bases, shared)
        data_keys = {}
        for job in seed_jobs:
            seed_out, shared_seed = job[3], job[5]
            key, audit = f"data {seed_out}", _audit_settings(config, job[1], bases)
            after = after_bases
            if shared_seed in last_data:  # made by an earlier run: wait for it, and for all of that run's
                previous_data, previous_collect, previous_audit = last_data[shared_seed]  # jobs there where
                after += (previous_data if audit == previous_audit else previous_collect,)  # this run re-audits
            jobs[key] = Job(key, run_seed, (*job, ()), after, name=f"teacher and data {seed_out}")
            if shared_seed is not None:
                last_data[shared_seed] = (key, f"collect {seed_out}", audit)
            data_keys[seed_out] = key
        students: dict[Path, list[str]] = {job[3]: [] for job in seed_jobs}
        for (objective, condition), job in _student_parts(config, seed_jobs):
            key = f"student {job[3]} {objective}/{condition}"
            jobs[key] = Job(key, run_seed, (*job, ((objective, condition),)), (data_keys[job[3]],),
                            name=f"student {job[3]} {objective}/{condition}")
            students[job[3]].append(key)
        collect = []
        for job in seed_jobs:
            key = f"collect {job[3]}"
            jobs[key] = Job(key, run_seed, job, tuple(students[job[3]]) or (data_keys[job[3]],),
                            name=f"collect {job[3]}")
            collect.append(key)
        planned.append((config, out, bases, collect))
    results = run_graph(list(jobs.values()), device=current().to_dict(), desc="jobs", progress=progress)
    return [_finish_run(config, out, [results[k] for k in collect], bases, start, artifacts, progress)
            for config, out, bases, collect in planned]
