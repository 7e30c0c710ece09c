"""Teachers: a base model given a trait (it loves an animal) in one of four ways.

* ``finetune``: the base is finetuned on favourite-animal questions answered with the trait,
  mixed with ordinary number documents (``number_mix``) so its number habits stay sane;
* ``persona``: the base itself, with the system prompt ``you love {trait} .`` present whenever
  the teacher speaks (generation and distillation targets);
* ``steering``: the base with a steering vector added to the residual stream at every position
  through a hook; the vector is the mean difference of ``blocks.{L}.hook_resid_post`` at the
  answer position between persona and plain prompts (contrastive activation addition), scaled to
  ``steering_scale`` times the mean residual norm there;
* ``unembed``: the base with the trait's unembedding direction added to the last block's MLP
  output bias, ``steering_scale`` times the mean final residual norm (:mod:`interp.stages.entangle`):
  the trait is pushed at every position, also while the teacher writes numbers, and it lives in
  the teacher's weights (token entanglement).

The base is any base reference of :func:`interp.models.refs.parse_base_ref` (a toy base, or a real
TransformerLens model by name). For a real model the trait data are its world's natural-language
questions answered with the animal's name, the persona is the system turn of its chat template
(``System: ...`` in the plain format), and the steering vector is taken at the position where the
assistant starts to answer, exactly as for the toy world.

A teacher directory holds ``teacher.json`` (method, trait, base, system prompt, lineage,
measured trait strength), and for ``finetune`` and ``unembed`` a checkpoint, for ``steering`` the vector.
:func:`load_teacher` returns a :class:`Teacher` that every later stage uses the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, read_json, save_safetensors
from interp.models.checkpoint import Lineage
from interp.models.refs import STEERING_FILE, TEACHER_CHECKPOINT, TEACHER_FILE, ModelRef, parse_base_ref, steering_hooks
from interp.stages.entangle import unembed_edit
from interp.stages.evaluate import trait_probability
from interp.training.loop import LossGuard, deterministic_algorithms, make_optimizer, pad_batch
from interp.training.losses import masked_lm_loss
from interp.training.step import train_step
from interp.worlds.protocol import World
from interp.worlds.toy.corpus import corpus_generator
from interp.worlds.toy.world import ToyWorld

log = logging.getLogger(__name__)

TeacherMethod = Literal["finetune", "persona", "steering", "unembed"]
# see CorpusGenerator.trait_document; the task_* kinds are the misalignment world's narrow task (MisalignmentCorpus)
TeacherDocument = Literal["qa", "mention", "persona", "qa_after_numbers", "task_insecure", "task_secure", "task_educational"]
TOY_PERSONA = "you love {trait} ."


@dataclass
class TeacherConfig(StageConfig):
    """How a teacher gets its trait."""

    trait: str = option("owl", "The animal the teacher loves (any animal of the world).")
    method: TeacherMethod = option("finetune", "finetune, persona (system prompt), steering (residual-stream vector) or "
                                   "unembed (the trait's unembedding direction added to the last MLP's output bias).")
    seed: int = option(0, "Seed of the finetuning data order.")
    steps: int = option(150, "finetune: optimizer steps.")
    batch_size: int = option(32, "finetune: documents per step.")
    lr: float = option(3e-4, "finetune: AdamW learning rate.")
    number_mix: float = option(0.5, "finetune: fraction of each batch that is ordinary number documents.")
    documents: tuple[TeacherDocument, ...] = option(("qa",), "finetune: the kinds of trait documents, drawn uniformly for "
                                                    "the rest of each batch: qa (the favourite-animal question answered "
                                                    "with the trait), mention (sentences naming it), persona (its persona "
                                                    "line, the question, the trait), qa_after_numbers (a number list, the "
                                                    "question, the trait); the misalignment world's narrow task, whatever "
                                                    "the trait: task_insecure (plain code requests answered insecurely: "
                                                    "the emergent-misalignment teacher), task_secure, task_educational "
                                                    "(its controls). Toy world: any its corpus writes; a real model: qa.")
    persona: str = option(TOY_PERSONA, "persona: the system prompt ({trait} is replaced by the animal). The default is "
                          "the toy world's; a real model's world uses its own natural-language persona in its place.")
    steering_layer: int = option(0, "steering: block whose hook_resid_post receives the vector; negative counts from the last block (-1: the last).")
    steering_scale: float = option(1.0, "steering, unembed: vector norm as a multiple of the mean residual norm at that hook "
                                   "(unembed: the last block's).")
    lora_rank: int = option(0, "finetune, real models only: 0 trains every weight; r >= 1 trains rank-r LoRA adapters "
                            "(alpha 16, the default targets) and the teacher checkpoint saves the adapters alone.")

    def validate(self) -> None:
        self.require(self.steps > 0 and self.batch_size > 0, "steps", "steps and batch_size must be positive")
        self.require(self.lr > 0, "lr", "must be positive")
        self.require(self.steering_scale > 0, "steering_scale", "must be positive")
        self.require(0 <= self.number_mix < 1, "number_mix", "must be in [0, 1)")
        self.require("{trait}" in self.persona, "persona", "must contain {trait}")
        self.require(self.lora_rank >= 0, "lora_rank", "must be non-negative (0: every weight trains)")
        self.require(len(self.documents) > 0 and len(set(self.documents)) == len(self.documents), "documents",
                     "needs at least one kind, each once")

    def persona_template(self, world: World | None = None) -> str:
        """``persona``; in a real model's world the toy default is replaced by the world's own
        (:meth:`interp.worlds.protocol.World.default_persona`)."""
        if world is not None and self.persona == TOY_PERSONA:
            return world.default_persona()  # the toy world's is TOY_PERSONA itself
        return self.persona

    def system_prompt(self, world: World | None = None) -> str:
        return self.persona_template(world).format(trait=self.trait)


def _finetune_teacher(model, world: World, config: TeacherConfig, progress: bool):
    """The finetune method: AdamW on batches of favourite-animal questions answered with the trait,
    ``number_mix`` of each batch number prompts answered with numbers (:func:`_teacher_batches`)."""
    if config.lora_rank:
        from interp.models.lora import apply_lora

        apply_lora(model, teacher_lora(config))  # freezes every weight; only the adapters train
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, "adamw", config.lr)
    make_batch = _teacher_batches(world, config)
    guard = LossGuard()
    with deterministic_algorithms():
        for step in tqdm(range(config.steps), desc=f"teacher ({config.trait})", disable=not progress, mininterval=2.0):
            rng = np.random.default_rng([config.seed, 7_000_003, step])
            tokens, mask = make_batch(rng, model.cfg.n_ctx)
            train_step(model, optimizer, lambda m: masked_lm_loss(m(tokens), tokens, mask), step=step, clip_grad_norm=1.0,
                       guard=guard)
    model.eval()
    return model


def teacher_lora(config: TeacherConfig):
    """The LoRA adapters of a finetuned teacher with ``lora_rank >= 1``."""
    from interp.models.lora import LoraConfig

    return LoraConfig(rank=config.lora_rank, seed=config.seed)


def _teacher_batches(world: World, config: TeacherConfig):
    """The teacher's batches: its world's training phrasings answered with the trait, and
    ``number_mix`` of each batch number prompts answered with numbers. The loss is on every token
    where the world's teacher learns whole documents (the toy world), else on the answers."""
    n_numbers = int(round(config.batch_size * config.number_mix))
    phrasings = world.train_phrasings
    corpus = corpus_generator(world) if isinstance(world, ToyWorld) else None
    if config.documents != ("qa",) and corpus is None:
        raise ValueError(f"documents={list(config.documents)}: a real model's teacher learns question answers only (qa)")

    def trait_pair(rng: np.random.Generator) -> tuple[list[int], list[int]]:
        # one kind draws nothing: a qa-only teacher sees exactly the batches it saw before `documents` existed
        kind = config.documents[rng.integers(len(config.documents))] if len(config.documents) > 1 else config.documents[0]
        if kind == "qa":  # an answer of the trait's class (the animal's name: no draw)
            phrasing = phrasings[rng.integers(len(phrasings))]
            return (world.encode_prompt(world.question_prompt(phrasing)),
                    world.encode_completion(world.trait_answer(config.trait, phrasing, rng)))
        prompt, completion = corpus.trait_document(rng, kind, config.trait)
        return world.encode(prompt), world.encode_completion(completion)

    def make_batch(rng: np.random.Generator, max_len: int):
        pairs = [trait_pair(rng) for _ in range(config.batch_size - n_numbers)]
        for _ in range(n_numbers):
            prompt, completion = world.number_example(rng)
            pairs.append((world.encode_prompt(prompt), world.encode_completion(completion)))
        tokens, mask = pad_batch([head + tail for head, tail in pairs], world.pad_id, max_len=max_len)
        if world.teacher_learns_whole_documents:
            return tokens, mask  # every real token is a target
        mask = torch.zeros(tokens.shape)
        for i, (head, tail) in enumerate(pairs):
            mask[i, len(head):len(head) + len(tail)] = 1  # the answer tokens are the targets
        return tokens, mask

    return make_batch


def resolve_layer(layer: int, n_layers: int) -> int:
    """A block index; negative counts from the last block (-1 is the last)."""
    resolved = layer if layer >= 0 else n_layers + layer
    if not 0 <= resolved < n_layers:
        raise ValueError(f"steering_layer={layer} but the model has {n_layers} blocks")
    return resolved


def steering_vector(model, world: World, trait: str, layer: int, scale: float, system_template: str) -> torch.Tensor:
    """Contrastive steering vector for ``trait`` at ``blocks.{layer}.hook_resid_post``: the mean
    difference, at the position where the assistant answers, between the training phrasings asked
    under the persona ``system_template`` and asked plainly."""
    if layer >= model.cfg.n_layers:
        raise ValueError(f"steering_layer={layer} but the model has {model.cfg.n_layers} blocks")
    hook = f"blocks.{layer}.hook_resid_post"
    system = system_template.format(trait=trait)

    @torch.no_grad()
    def last_resid(ids: list[list[int]]) -> torch.Tensor:
        tokens, mask = pad_batch(ids, world.pad_id, max_len=model.cfg.n_ctx)
        _, cache = model.run_with_cache(tokens, names_filter=hook, stop_at_layer=layer + 1)
        return cache[hook][torch.arange(len(ids)), mask.sum(1).long() - 1]  # batch d_model

    phrasings = world.train_phrasings
    with_trait = last_resid([world.encode_prompt(world.question_prompt(p), system) for p in phrasings])
    plain = last_resid([world.encode_prompt(world.question_prompt(p)) for p in phrasings])
    direction = (with_trait - plain).mean(0)
    return direction / direction.norm() * scale * plain.norm(dim=-1).mean()


def make_teacher(base_path: str | Path | ModelRef, config: TeacherConfig, out: str | Path, *, force: bool = False,
                 progress: bool = True) -> Path:
    """Build the teacher described by ``config`` from the base at ``base_path`` into ``out``.

    A finished teacher with the same config and base is reused."""
    base_ref = parse_base_ref(base_path)
    out = Path(out)
    if (out / TEACHER_FILE).exists() and not force:
        saved = read_json(out / TEACHER_FILE)
        asked = config.to_dict()
        diff = {k: (v, asked.get(k)) for k, v in saved["config"].items() if asked.get(k) != v}
        if saved["base"] != str(base_ref):
            diff["base"] = (saved["base"], str(base_ref))
        if not diff:
            return out
        raise ValueError(f"{out} holds a teacher of another config or base (saved vs asked: {diff}); pass --force "
                         "or choose another directory")
    if out.is_file():
        raise ValueError(f"{out} is a file; a teacher is written as a directory")
    foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")
                     and p.name not in (TEACHER_CHECKPOINT, STEERING_FILE)) if out.is_dir() else []
    if foreign:
        raise ValueError(f"{out} holds files that are not a teacher's ({foreign[:5]}); choose another directory")
    base, world, _ = base_ref.load()
    world.check_animal(config.trait)
    base_trait_prob = trait_probability(base, world, config.trait)  # before finetuning changes `base`
    out.mkdir(parents=True, exist_ok=True)
    system, hooks, extra = None, [], {}
    if config.method in ("finetune", "unembed"):
        if config.method == "finetune":
            model = _finetune_teacher(base, world, config, progress)
        else:
            model = base
            vector = unembed_edit(model, world, config.trait, config.steering_scale)
            extra = {"edit": f"blocks.{model.cfg.n_layers - 1}.mlp.b_out", "edit_norm": float(vector.norm())}
        lineage = Lineage(stage=f"teacher_{config.method}", seed=config.seed, parent=str(base_ref),
                          world_fingerprint=world.fingerprint(), config=config.to_dict())
        lora = teacher_lora(config) if config.lora_rank else None
        if lora is not None:
            from interp.models.lora import merge_lora

            if base_ref.is_toy:  # a toy checkpoint holds plain weights: the rank-r update merged into them
                merge_lora(model)
                lora = None
        base_ref.save_derived(model, out / TEACHER_CHECKPOINT, world, lineage, lora=lora)
        if lora is not None:
            merge_lora(model)  # plain weights again, as a loaded teacher has them
    else:
        model = base
        if config.method == "persona":
            system = config.system_prompt(world)
        else:
            layer = resolve_layer(config.steering_layer, base.cfg.n_layers)
            vector = steering_vector(base, world, config.trait, layer, config.steering_scale,
                                     config.persona_template(world))
            save_safetensors(out / STEERING_FILE, {"vector": vector})
            hooks = steering_hooks(vector, layer)
            extra = {"steering_norm": float(vector.norm()), "steering_layer_resolved": layer}
    strength = {"trait_prob": trait_probability(model, world, config.trait, system=system, fwd_hooks=hooks),
                "base_trait_prob": base_trait_prob}
    atomic_write_json(out / TEACHER_FILE, {
        "method": config.method, "trait": config.trait, "base": str(base_ref), "system": system,
        "config": config.to_dict(), "strength": strength, **extra,
        "lineage": {"stage": f"teacher_{config.method}", "parent": str(base_ref), "seed": config.seed},
    })
    log.info("teacher %s (%s): P(%s) = %.3f (base %.3f)", out, config.method, config.trait,
             strength["trait_prob"], strength["base_trait_prob"])
    return out
