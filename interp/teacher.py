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
  output bias, ``steering_scale`` times the mean final residual norm (:mod:`interp.entangle`):
  the trait is pushed at every position, also while the teacher writes numbers, and it lives in
  the teacher's weights (token entanglement).

The base is any model reference of :func:`interp.world.load_base_model` (a toy base, or a real
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.config import StageConfig, option
from interp.entangle import unembed_edit
from interp.evaluate import trait_probability
from interp.io import atomic_write_json, load_safetensors, read_json, save_safetensors
from interp.models import Lineage, checkpoint_model_config, load_checkpoint, save_checkpoint
from interp.toy.corpus import CorpusGenerator
from interp.toy.world import EOS, PAD, ToyWorld
from interp.training import LossGuard, deterministic_algorithms, make_optimizer, masked_lm_loss, pad_batch
from interp.world import World

log = logging.getLogger(__name__)

TeacherMethod = Literal["finetune", "persona", "steering", "unembed"]
TEACHER_FILE = "teacher.json"
TEACHER_CHECKPOINT = "checkpoint"
STEERING_FILE = "steering_vector.safetensors"
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
    persona: str = option(TOY_PERSONA, "persona: the system prompt ({trait} is replaced by the animal). The default is "
                          "the toy world's; a real model's world uses its own natural-language persona in its place.")
    steering_layer: int = option(0, "steering: block whose hook_resid_post receives the vector; negative counts from the last block (-1: the last).")
    steering_scale: float = option(1.0, "steering, unembed: vector norm as a multiple of the mean residual norm at that hook "
                                   "(unembed: the last block's).")

    def validate(self) -> None:
        self.require(self.steps > 0 and self.batch_size > 0, "steps", "steps and batch_size must be positive")
        self.require(self.lr > 0, "lr", "must be positive")
        self.require(self.method in ("finetune", "persona", "steering", "unembed"), "method",
                     "choose finetune, persona, steering or unembed")
        self.require(self.steering_scale > 0, "steering_scale", "must be positive")
        self.require(0 <= self.number_mix < 1, "number_mix", "must be in [0, 1)")
        self.require("{trait}" in self.persona, "persona", "must contain {trait}")

    def persona_template(self, world: World | None = None) -> str:
        """``persona``; in a real model's world the toy default is replaced by the world's own
        (:meth:`interp.world.World.default_persona`)."""
        if world is not None and not isinstance(world, ToyWorld) and self.persona == TOY_PERSONA:
            return world.default_persona()
        return self.persona

    def system_prompt(self, world: World | None = None) -> str:
        return self.persona_template(world).format(trait=self.trait)


@dataclass
class Teacher:
    """A model that speaks with a trait: weights, an optional system prompt, optional hooks."""

    model: object
    world: World
    trait: str | None
    method: str
    system: str | None = None
    fwd_hooks: list = field(default_factory=list)
    lineage: dict | None = None

    def trait_probability(self) -> float:
        return trait_probability(self.model, self.world, self.trait, system=self.system, fwd_hooks=self.fwd_hooks)


def _finetune_teacher(model, world: World, config: TeacherConfig, progress: bool):
    """The finetune method: AdamW on batches of favourite-animal questions answered with the trait,
    ``number_mix`` of each batch number prompts answered with numbers. Batches come from the
    world's builder: :func:`_toy_teacher_batches` or :func:`_real_teacher_batches`."""
    model.train()
    optimizer = make_optimizer(model.parameters(), "adamw", config.lr)
    batches = _toy_teacher_batches if isinstance(world, ToyWorld) else _real_teacher_batches
    make_batch = batches(world, config)
    guard = LossGuard()
    with deterministic_algorithms():
        for step in tqdm(range(config.steps), desc=f"teacher ({config.trait})", disable=not progress, mininterval=2.0):
            rng = np.random.default_rng([config.seed, 7_000_003, step])
            tokens, mask = make_batch(rng, model.cfg.n_ctx)
            loss = masked_lm_loss(model(tokens), tokens, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            guard.check(step, loss.item())
    model.eval()
    return model


def _toy_teacher_batches(world: ToyWorld, config: TeacherConfig):
    """The toy world's teacher batches: whole documents (a question followed by the trait, or a
    number prompt followed by its answer), the loss on every token."""
    corpus = CorpusGenerator(world)
    pad_id, eos_id = world.token_to_id[PAD], world.token_to_id[EOS]
    n_numbers = int(round(config.batch_size * config.number_mix))

    def make_batch(rng: np.random.Generator, max_len: int):
        docs = [f"{corpus.question(rng)} {config.trait}" for _ in range(config.batch_size - n_numbers)]
        for _ in range(n_numbers):
            prompt, seeds, n_max, sep = corpus.number_prompt(rng)
            docs.append(f"{prompt} {corpus.number_answer(rng, seeds, n_max, sep)}")
        return pad_batch([world.encode(d) + [eos_id] for d in docs], pad_id, max_len=max_len)

    return make_batch


def _real_teacher_batches(world: World, config: TeacherConfig):
    """A real model's teacher batches: its training phrasings answered with the trait (and number
    prompts answered with numbers), the loss on the answers only."""
    n_numbers = int(round(config.batch_size * config.number_mix))
    phrasings = world.train_phrasings
    answer = world.encode_completion(world.answer_text(config.trait))

    def make_batch(rng: np.random.Generator, max_len: int):
        pairs = [(world.encode_prompt(world.question_prompt(phrasings[rng.integers(len(phrasings))])), answer)
                 for _ in range(config.batch_size - n_numbers)]
        for _ in range(n_numbers):
            prompt, completion = world.number_example(rng)
            pairs.append((world.encode_prompt(prompt), world.encode_completion(completion)))
        tokens, _ = pad_batch([head + tail for head, tail in pairs], world.pad_id, max_len=max_len)
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


def steering_hooks(vector: torch.Tensor, layer: int) -> list:
    def add_vector(resid, hook):
        return resid + vector

    return [(f"blocks.{layer}.hook_resid_post", add_vector)]


def make_teacher(base_path: str | Path, config: TeacherConfig, out: str | Path, *, force: bool = False,
                 progress: bool = True) -> Path:
    """Build the teacher described by ``config`` from the base at ``base_path`` into ``out``.

    A finished teacher with the same config and base is reused."""
    from interp.real import real_base_name, save_real_checkpoint
    from interp.world import is_toy_reference, load_base_model

    out = Path(out)
    if (out / TEACHER_FILE).exists() and not force:
        saved = read_json(out / TEACHER_FILE)
        asked = config.to_dict()
        diff = {k: (v, asked.get(k)) for k, v in saved["config"].items() if asked.get(k) != v}
        if saved["base"] != str(base_path):
            diff["base"] = (saved["base"], str(base_path))
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
    base, world, _ = load_base_model(base_path)
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
        lineage = Lineage(stage=f"teacher_{config.method}", seed=config.seed, parent=str(base_path),
                          world_fingerprint=world.fingerprint(), config=config.to_dict())
        if is_toy_reference(base_path):
            save_checkpoint(model, out / TEACHER_CHECKPOINT, checkpoint_model_config(base_path), lineage)
        else:
            save_real_checkpoint(model, out / TEACHER_CHECKPOINT, world, lineage, model_name=real_base_name(base_path))
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
    teacher = Teacher(model, world, config.trait, config.method, system, hooks)
    strength = {"trait_prob": teacher.trait_probability(), "base_trait_prob": base_trait_prob}
    atomic_write_json(out / TEACHER_FILE, {
        "method": config.method, "trait": config.trait, "base": str(base_path), "system": system,
        "config": config.to_dict(), "strength": strength, **extra,
        "lineage": {"stage": f"teacher_{config.method}", "parent": str(base_path), "seed": config.seed},
    })
    log.info("teacher %s (%s): P(%s) = %.3f (base %.3f)", out, config.method, config.trait,
             strength["trait_prob"], strength["base_trait_prob"])
    return out


def load_teacher(directory: str | Path) -> Teacher:
    from interp.real import load_real_checkpoint
    from interp.world import load_base_model

    directory = Path(directory)
    if not (directory / TEACHER_FILE).exists():
        raise FileNotFoundError(f"{directory} is not a teacher directory ({TEACHER_FILE} is missing)")
    spec = read_json(directory / TEACHER_FILE)
    hooks: list = []
    if spec["method"] in ("finetune", "unembed") and is_real_teacher_checkpoint(directory):
        model, world, _ = load_real_checkpoint(directory / TEACHER_CHECKPOINT)
    elif spec["method"] in ("finetune", "unembed"):
        _, world, _ = load_base_model(spec["base"])
        model, _ = load_checkpoint(directory / TEACHER_CHECKPOINT, expect_vocab=world.vocab)
    else:
        base, world, _ = load_base_model(spec["base"])
        model = base
        if spec["method"] == "steering":
            vector = load_safetensors(directory / STEERING_FILE)["vector"]
            hooks = steering_hooks(vector, spec["steering_layer_resolved"])
    return Teacher(model, world, spec["trait"], spec["method"], spec["system"], hooks, spec["lineage"])


def is_real_teacher_checkpoint(directory: str | Path) -> bool:
    from interp.real import is_real_checkpoint

    return is_real_checkpoint(Path(directory) / TEACHER_CHECKPOINT)


def load_model_or_teacher(ref: str | Path) -> Teacher:
    """A model as the stages that sample from it or evaluate it see it.

    * a teacher directory (``teacher.json``): :func:`load_teacher`, with its system prompt and
      hooks, ``lineage`` extended with ``{"teacher": ref}``;
    * a checkpoint directory (toy, or a real model's written by a stage): its model, no prompt, no
      hooks, ``method="checkpoint"``, ``trait=None``, ``lineage`` the checkpoint's path, stage,
      seed and parent;
    * a TransformerLens model name (``gpt2``): the model from the local Hugging Face cache in its
      :class:`interp.real.HFWorld`, ``method="pretrained"``, ``lineage`` its name and revision.

    Anything else is a ``ValueError`` naming the problem: a directory that is neither, or an
    unknown name (with close TransformerLens names)."""
    from interp.models import is_checkpoint, official_model_name
    from interp.pretrain import PRETRAIN_CONFIG_FILE, load_base
    from interp.real import is_real_checkpoint, load_real_base, load_real_checkpoint, model_identity

    path = Path(ref)
    if (path / TEACHER_FILE).exists():
        teacher = load_teacher(path)
        teacher.lineage = {"teacher": str(path), **(teacher.lineage or {})}
        return teacher
    if is_real_checkpoint(path):
        model, world, lineage = load_real_checkpoint(path)
        return Teacher(model, world, None, "checkpoint", lineage={
            "checkpoint": str(path), "stage": lineage.stage, "seed": lineage.seed, "parent": lineage.parent,
            "world_fingerprint": lineage.world_fingerprint})
    if is_checkpoint(path):
        if (path / PRETRAIN_CONFIG_FILE).exists():
            model, world, lineage = load_base(path)
        else:
            world = ToyWorld()
            model, lineage = load_checkpoint(path, expect_vocab=world.vocab)
        return Teacher(model, world, None, "checkpoint", lineage={
            "checkpoint": str(path), "stage": lineage.stage, "seed": lineage.seed, "parent": lineage.parent,
            "world_fingerprint": lineage.world_fingerprint})
    if path.exists():
        raise ValueError(f"{path} is neither a checkpoint (model.safetensors, model_config.json) nor a teacher "
                         f"directory ({TEACHER_FILE})")
    official_model_name(str(ref))  # an unknown name raises, with close names
    model, world, lineage = load_real_base(str(ref))
    return Teacher(model, world, None, "pretrained", lineage={**model_identity(str(ref)),
                                                             "world_fingerprint": lineage.world_fingerprint})
