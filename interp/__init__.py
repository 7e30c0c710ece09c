"""interp: mechanistic-interpretability suite for subliminal learning on TransformerLens models.

The stages of the loop, the instruments that measure it and the studies built from them, each
with its config dataclass, importable from the package itself::

    from interp import RunConfig, run

    results = run(RunConfig.quick_config(), "runs/quick", artifacts="artifacts")
    results.comparison("shared_init", "control", "sft")["difference"]

The instruments take models in memory (any ``HookedTransformer``) and a trait given as target
tokens or a loss (:class:`Trait`): see the Python page of the documentation. ``import interp`` is
cheap: each name is imported from its module when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it (the one place a public name is declared; the block under
# TYPE_CHECKING repeats it for type checkers and the API reference, and a test checks they agree)
_EXPORTS: dict[str, str] = {
    # the whole loop, and grids of it
    "RunConfig": "interp.studies.run",
    "RunResults": "interp.studies.run",
    "run": "interp.studies.run",
    "SweepConfig": "interp.studies.sweep",
    "run_sweep": "interp.studies.sweep",
    # the stages
    "PretrainConfig": "interp.stages.pretrain",
    "pretrain": "interp.stages.pretrain",
    "TeacherConfig": "interp.stages.teacher",
    "make_teacher": "interp.stages.teacher",
    "GenerateConfig": "interp.stages.generate",
    "generate_numbers": "interp.stages.generate",
    "sample_completions": "interp.stages.generate",
    "FilterConfig": "interp.stages.filter",
    "filter_file": "interp.stages.filter",
    "FinetuneConfig": "interp.stages.finetune",
    "finetune_student": "interp.stages.finetune",
    "train_student": "interp.stages.finetune",
    "EvaluateConfig": "interp.stages.evaluate",
    "evaluate_model": "interp.stages.evaluate",
    "trait_probability": "interp.stages.evaluate",
    # the instruments
    "Trait": "interp.instruments.trait",
    "WeightMetrics": "interp.instruments.alignment",
    "weight_metrics": "interp.instruments.alignment",
    "gradient_alignment": "interp.instruments.alignment",
    "AlignmentRecorder": "interp.instruments.recording",
    "teacher_direction": "interp.instruments.recording",
    "AuditConfig": "interp.instruments.audit",
    "Source": "interp.instruments.audit",
    "audit_data": "interp.instruments.audit",
    "run_audit": "interp.instruments.audit",
    "unigram_readout": "interp.instruments.audit",
    "SAESpec": "interp.instruments.features.sae",
    "train_sae": "interp.instruments.features.sae",
    "load_sae": "interp.instruments.features.sae",
    "FeaturesConfig": "interp.instruments.features.pipeline",
    "run_features": "interp.instruments.features.pipeline",
    # the other studies
    "TheoremConfig": "interp.studies.theorem",
    "run_theorem": "interp.studies.theorem",
    # models and worlds
    "ModelConfig": "interp.models.checkpoint",
    "build_model": "interp.models.checkpoint",
    "load_checkpoint": "interp.models.checkpoint",
    "Teacher": "interp.models.refs",
    "load_teacher": "interp.models.refs",
    "parse_model_ref": "interp.models.refs",
    "ToyWorld": "interp.worlds.toy.world",
    # results pages
    "finish_run": "interp.report.outputs",
    "make_report": "interp.report.page",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # the same names, imported for type checkers and the API reference (griffe)
    from interp.instruments.alignment import WeightMetrics, gradient_alignment, weight_metrics
    from interp.instruments.audit import AuditConfig, Source, audit_data, run_audit, unigram_readout
    from interp.instruments.features.pipeline import FeaturesConfig, run_features
    from interp.instruments.features.sae import SAESpec, load_sae, train_sae
    from interp.instruments.recording import AlignmentRecorder, teacher_direction
    from interp.instruments.trait import Trait
    from interp.models.checkpoint import ModelConfig, build_model, load_checkpoint
    from interp.models.refs import Teacher, load_teacher, parse_model_ref
    from interp.report.outputs import finish_run
    from interp.report.page import make_report
    from interp.stages.evaluate import EvaluateConfig, evaluate_model, trait_probability
    from interp.stages.filter import FilterConfig, filter_file
    from interp.stages.finetune import FinetuneConfig, finetune_student, train_student
    from interp.stages.generate import GenerateConfig, generate_numbers, sample_completions
    from interp.stages.pretrain import PretrainConfig, pretrain
    from interp.stages.teacher import TeacherConfig, make_teacher
    from interp.studies.run import RunConfig, RunResults, run
    from interp.studies.sweep import SweepConfig, run_sweep
    from interp.studies.theorem import TheoremConfig, run_theorem
    from interp.worlds.toy.world import ToyWorld


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
