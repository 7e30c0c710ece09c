"""Model references: the one typed value a model name or directory becomes where it enters.

A stage is told which model to start from by a string: a directory or a real model's name. That
string is parsed once, where it enters (the CLI, :class:`interp.studies.run.RunConfig`, a stage's
entry point), by :func:`parse_model_ref` into one of

* :class:`ToyBase`: a toy base written by ``interp pretrain`` (a checkpoint with ``pretrain_config.json``);
* :class:`ToyCheckpoint`: another toy checkpoint written by a stage (a finetuned teacher or student);
* :class:`RealCheckpoint`: a real model's checkpoint written by a stage (full weights, or LoRA adapters);
* :class:`TeacherDir`: a teacher directory (``teacher.json``: a model with a system prompt or hooks);
* :class:`RealName`: a TransformerLens model name (``gpt2``), loaded from the local Hugging Face cache;
* :class:`LocalModel`: a GGUF file or a Hugging Face directory (:mod:`interp.models.gguf`).

Each knows how to load itself (:meth:`ModelRef.load`, :meth:`ModelRef.speaker`), its identity for
lineage (:meth:`ModelRef.identity`), the file name it is stored under (:attr:`ModelRef.file_name`)
and how a model derived from it is saved (:meth:`ModelRef.save_derived`). ``raw``, the string
exactly as given, is what lineage and stage inputs record (``str(ref)``), so artifacts written
before references were typed are still recognised and reused.

:class:`Teacher` is a model as the stages that sample from it, evaluate it or distil from it see
it: weights, world, and the teacher's system prompt and hooks, if any.

A new kind of model (a GGUF file, say) is a subclass of :class:`ModelRef` with its ``load`` and
``identity``, and one rule in :func:`parse_model_ref` (and :func:`parse_base_ref` if stages may
train from it).
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from interp.core.config import ConfigError
from interp.core.io import file_sha256, load_safetensors, read_json
from interp.models.checkpoint import (
    LINEAGE_FILE,
    MODEL_CONFIG_FILE,
    PRETRAIN_CONFIG_FILE,
    WEIGHTS_FILE,
    Lineage,
    _read_checkpoint_json,
    checkpoint_model_config,
    is_checkpoint,
    load_checkpoint,
    official_model_name,
    save_checkpoint,
)
from interp.models import gguf
from interp.models.lora import ADAPTER_FILE
from interp.models.real import (
    is_model_name,
    is_real_checkpoint,
    load_real_base,
    load_real_checkpoint,
    model_identity,
    read_model_config,
    save_real_checkpoint,
)
from interp.worlds.protocol import World
from interp.worlds.toy.world import ToyWorld, WorldConfig, make_world, world_of_fingerprint

TEACHER_FILE = "teacher.json"
TEACHER_CHECKPOINT = "checkpoint"
STEERING_FILE = "steering_vector.safetensors"


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


def steering_hooks(vector, layer: int) -> list:
    """The forward hook that adds a steering ``vector`` to ``blocks.{layer}.hook_resid_post``."""
    def add_vector(resid, hook):
        return resid + vector

    return [(f"blocks.{layer}.hook_resid_post", add_vector)]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference (see the module docstring). ``str(ref)`` is ``raw``."""

    raw: str
    """The reference exactly as given: what lineage and stage inputs record."""
    kind: ClassVar[str] = "model"

    def __str__(self) -> str:
        return self.raw

    @property
    def path(self) -> Path:
        return Path(self.raw)

    @property
    def is_toy(self) -> bool:
        """Does the model speak the toy world (a toy checkpoint, or a teacher on a toy base)?"""
        return False

    @property
    def file_name(self) -> str:
        """A file name for this model: a directory's name, or a model name with ``/`` spelled ``--``."""
        return self.path.name

    @property
    def model_name(self) -> str | None:
        """The official TransformerLens name behind a real model, else None."""
        return None

    def load(self) -> tuple[Any, World, Lineage]:
        """``(model, world, lineage)``: the weights, the world they speak, where they came from."""
        raise NotImplementedError

    def speaker(self) -> Teacher:
        """The model as the stages that sample from it or evaluate it see it: no system prompt and
        no hooks (a teacher has its own), ``method`` ``checkpoint`` (``pretrained`` for a name),
        ``lineage`` the checkpoint's path, stage, seed and parent."""
        model, world, lineage = self.load()
        return Teacher(model, world, None, "checkpoint", lineage={
            "checkpoint": self.raw, "stage": lineage.stage, "seed": lineage.seed, "parent": lineage.parent,
            "world_fingerprint": lineage.world_fingerprint})

    def identity(self) -> dict:
        """The model by its weights (a stage's inputs): the SHA-256 of its weights file."""
        for name in (WEIGHTS_FILE, ADAPTER_FILE):
            if (self.path / name).is_file():
                return {"base_weights_sha256": file_sha256(self.path / name)}
        return {"base_weights_sha256": None}

    def save_derived(self, model, out: str | Path, world: World, lineage: Lineage, *, lora=None,
                     extra: Callable[[Path], None] | None = None) -> Path:
        """Save ``model``, trained from this one, as a checkpoint of the same kind at ``out``."""
        raise ValueError(f"{self.raw} is a {self.kind.replace('_', ' ')}; a model is trained from a base")


@dataclass(frozen=True)
class ToyBase(ModelRef):
    """A toy base written by ``interp pretrain``; it speaks the world of its pretraining config."""

    kind: ClassVar[str] = "toy_base"

    @property
    def is_toy(self) -> bool:
        return True

    def world(self) -> ToyWorld:
        """The world of the base's pretraining config."""
        path = self.path / PRETRAIN_CONFIG_FILE
        try:
            return make_world(WorldConfig.from_dict(_read_checkpoint_json(path).get("world", {})))
        except ConfigError as e:
            raise ValueError(f"{path}: {e}") from None

    def load(self) -> tuple[Any, ToyWorld, Lineage]:
        world = self.world()
        model, lineage = load_checkpoint(self.path, expect_vocab=world.vocab)
        return model, world, lineage

    def save_derived(self, model, out, world, lineage, *, lora=None, extra=None) -> Path:
        if lora is not None:
            raise ValueError(f"LoRA adapters are an option for real models; {self.raw} is a toy base")
        return save_checkpoint(model, out, checkpoint_model_config(self.path), lineage, extra=extra)


@dataclass(frozen=True)
class ToyCheckpoint(ModelRef):
    """A toy checkpoint written by a stage (a teacher's or a student's); it speaks the toy world
    its lineage's world fingerprint names (the default animal world when none matches)."""

    kind: ClassVar[str] = "toy_checkpoint"

    @property
    def is_toy(self) -> bool:
        return True

    def load(self) -> tuple[Any, ToyWorld, Lineage]:
        lineage_path = self.path / LINEAGE_FILE  # missing: load_checkpoint names the incomplete checkpoint
        world = world_of_fingerprint(_read_checkpoint_json(lineage_path).get("world_fingerprint")
                                     if lineage_path.is_file() else None)
        model, lineage = load_checkpoint(self.path, expect_vocab=world.vocab)
        return model, world, lineage


@dataclass(frozen=True)
class RealCheckpoint(ModelRef):
    """A real model's checkpoint written by a stage: full weights, or LoRA adapters (merged when loaded)."""

    kind: ClassVar[str] = "real_checkpoint"

    @property
    def model_name(self) -> str:
        return read_model_config(self.path)["model_name"]

    def load(self):
        return load_real_checkpoint(self.path)

    def save_derived(self, model, out, world, lineage, *, lora=None, extra=None) -> Path:
        return save_real_checkpoint(model, out, world, lineage, model_name=self.model_name, lora=lora, extra=extra)


@dataclass(frozen=True)
class RealName(ModelRef):
    """A TransformerLens model name, loaded from the local Hugging Face cache in its own world."""

    kind: ClassVar[str] = "real_name"

    @property
    def file_name(self) -> str:
        return self.raw.replace("/", "--")

    @property
    def model_name(self) -> str:
        return official_model_name(self.raw)

    def load(self):
        return load_real_base(self.raw)

    def speaker(self) -> Teacher:
        model, world, lineage = self.load()
        return Teacher(model, world, None, "pretrained", lineage={**model_identity(self.raw),
                                                                 "world_fingerprint": lineage.world_fingerprint})

    def identity(self) -> dict:
        """A named model by its official name and the cached snapshot (revision) it loads from."""
        return {"base_weights_sha256": None, "base_model": model_identity(self.raw)}

    def save_derived(self, model, out, world, lineage, *, lora=None, extra=None) -> Path:
        return save_real_checkpoint(model, out, world, lineage, model_name=self.model_name, lora=lora, extra=extra)


@dataclass(frozen=True)
class LocalModel(RealName):
    """A local model file (GGUF) or Hugging Face directory, converted once into a HookedTransformer
    (:mod:`interp.models.gguf`); named in checkpoints by its absolute path, identified by its SHA-256."""

    kind: ClassVar[str] = "local_model"

    @property
    def file_name(self) -> str:
        return self.path.name

    @property
    def model_name(self) -> str:
        return gguf.canonical(self.raw)


@dataclass(frozen=True)
class TeacherDir(ModelRef):
    """A teacher directory written by ``interp teacher``: its base, a trait, and a finetuned
    checkpoint, a system prompt or a steering vector."""

    kind: ClassVar[str] = "teacher"

    def spec(self) -> dict:
        """``teacher.json``; one that is not JSON, or lacks what a teacher needs, is a ``ValueError`` naming it."""
        path = self.path / TEACHER_FILE
        spec = _read_checkpoint_json(path)
        missing = [k for k in ("base", "method", "trait", "system", "lineage") if k not in spec]
        if missing or not isinstance(spec["base"], str):
            raise ValueError(f"{path}: corrupt teacher file ({f'no {missing}' if missing else 'base is not a string'}); "
                             "write the teacher again with `interp teacher --force`")
        if spec["method"] == "steering" and not isinstance(spec.get("steering_layer_resolved"), int):
            raise ValueError(f"{path}: corrupt teacher file (a steering teacher without steering_layer_resolved)")
        return spec

    @property
    def is_toy(self) -> bool:
        return parse_model_ref(self.spec()["base"]).is_toy

    def teacher(self) -> Teacher:
        """The teacher with its system prompt and hooks; ``lineage`` is its own (``teacher.json``)."""
        spec = self.spec()
        base = parse_base_ref(spec["base"])
        hooks: list = []
        if spec["method"] in ("finetune", "unembed"):  # the trait is in the checkpoint's weights
            checkpoint = self.path / TEACHER_CHECKPOINT
            if is_real_checkpoint(checkpoint):
                model, world, _ = load_real_checkpoint(checkpoint)
            else:
                _, world, _ = base.load()
                model, _ = load_checkpoint(checkpoint, expect_vocab=world.vocab)
        else:
            model, world, _ = base.load()
            if spec["method"] == "steering":
                vector = load_safetensors(self.path / STEERING_FILE)["vector"]
                hooks = steering_hooks(vector, spec["steering_layer_resolved"])
        return Teacher(model, world, spec["trait"], spec["method"], spec["system"], hooks, spec["lineage"])

    def load(self):
        teacher = self.teacher()
        return teacher.model, teacher.world, None

    def speaker(self) -> Teacher:
        """:meth:`teacher`, ``lineage`` extended with ``{"teacher": raw}``."""
        teacher = self.teacher()
        teacher.lineage = {"teacher": self.raw, **(teacher.lineage or {})}
        return teacher


def parse_model_ref(ref: str | Path | ModelRef) -> ModelRef:
    """The typed reference of a model directory or name (see the module docstring).

    A directory that is neither a checkpoint nor a teacher, or a name TransformerLens does not
    know (with close names), is a ``ValueError`` naming it."""
    if isinstance(ref, ModelRef):
        return ref
    raw = _checked_reference(ref)
    with _unreadable_reference(raw):
        return _parse_model_ref(raw)


def _parse_model_ref(raw: str) -> ModelRef:
    path = Path(raw)
    if (path / TEACHER_FILE).exists():
        return TeacherDir(raw)
    if is_real_checkpoint(path):
        return RealCheckpoint(raw)
    if is_checkpoint(path):
        return ToyBase(raw) if (path / PRETRAIN_CONFIG_FILE).exists() else ToyCheckpoint(raw)
    if gguf.is_local_model(path):
        return LocalModel(raw)
    if path.exists():
        raise ValueError(f"{path} is neither a checkpoint ({WEIGHTS_FILE}, {MODEL_CONFIG_FILE}) nor a teacher "
                         f"directory ({TEACHER_FILE})")
    official_model_name(raw)  # an unknown name raises, with close names
    return RealName(raw)


def parse_base_ref(ref: str | Path | ModelRef) -> ToyBase | RealCheckpoint | RealName:
    """:func:`parse_model_ref` for a stage that trains from a base: a toy base, a real model's
    checkpoint or a real model name. Anything else is a ``FileNotFoundError`` saying what it is."""
    if isinstance(ref, (ToyBase, RealCheckpoint, RealName)):
        return ref
    raw = _checked_reference(ref)
    with _unreadable_reference(raw):
        return _parse_base_ref(raw)


def _parse_base_ref(raw: str) -> ToyBase | RealCheckpoint | RealName:
    path = Path(raw)
    if is_real_checkpoint(path):
        return RealCheckpoint(raw)
    if gguf.is_local_model(path):
        return LocalModel(raw)
    if not path.exists() and is_model_name(raw):
        return RealName(raw)
    if not (path / PRETRAIN_CONFIG_FILE).exists() or not is_checkpoint(path):
        what = "a checkpoint but not a pretrained base" if is_checkpoint(path) else (
            "not a checkpoint directory" if path.exists() else "missing")
        raise FileNotFoundError(f"{path} is {what} ({PRETRAIN_CONFIG_FILE} or the weights not found); students and "
                                "teachers start from a base written by `interp pretrain`")
    return ToyBase(raw)


def _checked_reference(ref: str | Path) -> str:
    """``ref`` as a string, refused (``ValueError``) when it cannot name a model: empty, or holding a
    control character (a newline, a tab, NUL), which no model name has and would break the one-line
    errors that show it."""
    raw = str(ref)
    if not raw:
        raise ValueError("an empty model reference: give a checkpoint or teacher directory, a model file or a model name")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in raw):
        raise ValueError(f"model reference {raw[:200]!r} holds a control character (a newline, tab or NUL); give a "
                         "checkpoint or teacher directory, a model file or a model name")
    return raw


@contextlib.contextmanager
def _unreadable_reference(raw: str) -> Iterator[None]:
    """Looking ``raw`` up on disk: an ``OSError`` other than a missing file (a name too long, a
    folder that may not be read) becomes a one-line ``ValueError`` naming the reference."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as e:
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        raise ValueError(f"model reference {shown}: cannot be read as a path ({e.strerror or type(e).__name__})") from None


def load_teacher(directory: str | Path) -> Teacher:
    """The teacher in ``directory`` (written by :func:`interp.stages.teacher.make_teacher`)."""
    raw = _checked_reference(directory)
    with _unreadable_reference(raw):
        exists = (Path(raw) / TEACHER_FILE).exists()
    if not exists:
        raise FileNotFoundError(f"{directory} is not a teacher directory ({TEACHER_FILE} is missing)")
    return TeacherDir(str(directory)).teacher()
