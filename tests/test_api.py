"""The package's front door: ``from interp import ...`` (lazy, every name documented), traits
given as tokens or a loss, the recorder's rows returned, and in-memory training that is the same
loop as the stage on disk."""

import ast
import copy
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import interp
import interp.stages.pretrain as pretrain_mod
from interp.instruments.recording import AlignmentRecorder
from interp.instruments.trait import Trait
from interp.stages.finetune import FinetuneConfig, encode_rows, finetune_student, train_student
from interp.models.checkpoint import load_checkpoint
from interp.stages.pretrain import PretrainConfig, pretrain
from interp.studies.run import RunResults
from interp.training.loop import make_optimizer, pad_batch
from interp.training.losses import masked_lm_loss
from interp.training.step import train_step
from interp.worlds.toy.corpus import CorpusGenerator

from conftest import TINY


def test_import_interp__is_cheap_and_the_quick_start_names_import():
    code = ("import sys, interp; assert 'torch' not in sys.modules, 'import interp imported torch'; "
            "from interp import RunConfig, run; assert callable(run) and RunConfig.quick_config().quick")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_public_api__every_name_resolves_is_documented_and_declared_for_the_reference():
    init = Path(interp.__file__)
    tree = ast.parse(init.read_text())
    typed = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.If)
             for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    assert typed == set(interp.__all__)  # the TYPE_CHECKING block (the API reference) lists the same names
    assert len(interp.__all__) == len(set(interp.__all__))
    for name in interp.__all__:
        obj = getattr(interp, name)
        assert obj.__module__ == interp._EXPORTS[name], name
        assert inspect.getdoc(obj) and len(inspect.getdoc(obj)) > 20, f"{name} has no docstring"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        interp.nonexistent


def test_trait__from_tokens_is_the_target_cross_entropy_and_of_world_the_animal_answer(tiny_model, world):
    owl = world.token_to_id["owl"]
    questions = [world.encode_prompt(world.question_prompt(p)) for p in world.train_phrasings[:4]]
    trait = Trait.from_tokens("owl", questions, [[owl]] * 4, pad_id=world.pad_id)
    logits = tiny_model(trait.tokens)
    expected = -np.mean([logits[i, len(q) - 1].log_softmax(-1)[owl].item() for i, q in enumerate(questions)])
    assert trait.loss(tiny_model).item() == pytest.approx(expected, rel=1e-5)
    assert trait.log_prob(tiny_model) == pytest.approx(-expected, rel=1e-5)
    # the world's trait: the same questions answered with the animal (then the end token), target the animal alone
    of_world = Trait.of_world(world, "owl", n=4)
    assert of_world.loss(tiny_model).item() == pytest.approx(expected, rel=1e-5)
    assert of_world.mask.sum().item() == 4
    as_loss = Trait.from_loss("owl", trait.loss)
    assert as_loss.loss(tiny_model).item() == trait.loss(tiny_model).item()
    with pytest.raises(ValueError, match="no target tokens"):
        as_loss.log_prob(tiny_model)
    with pytest.raises(ValueError, match="as many targets as prompts"):
        Trait.from_tokens("x", questions, [[owl]])
    with pytest.raises(ValueError, match="not an animal|unknown animal|animal"):
        Trait.of_world(world, "unicorn")


def _recorded(model, teacher, base, trait, world=None, log_path=None):
    model = copy.deepcopy(model)
    recorder = AlignmentRecorder(model, log_path, teacher_params=dict(teacher.named_parameters()),
                                 teacher_base_params=base, world=world, trait=trait, trait_grad_every=1)
    optimizer = make_optimizer(model.parameters(), "adamw", 1e-3)
    tokens, mask = pad_batch([world_ids for world_ids in _SEQS], 0)
    for step in range(2):
        train_step(model, optimizer, lambda m: masked_lm_loss(m(tokens), tokens, mask), step=step, callbacks=[recorder])
    recorder.close()
    return recorder.records


_SEQS = [[1, 5, 6, 7, 8, 9], [1, 9, 8, 7]]


def test_recorder__a_trait_as_tokens_records_what_the_animal_name_records_and_keeps_its_rows(tiny_model, world,
                                                                                             tmp_path):
    base = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    teacher = copy.deepcopy(tiny_model)
    with torch.no_grad():
        teacher.unembed.W_U[:, world.token_to_id["owl"]] += 0.5
    by_name = _recorded(tiny_model, teacher, base, "owl", world=world, log_path=tmp_path / "a.jsonl")
    by_trait = _recorded(tiny_model, teacher, base, Trait.of_world(world, "owl"))
    assert len(by_name) == 2 and by_name == by_trait and by_name[0]["grad_cos_trait_grad"] is not None
    from interp.core.io import read_jsonl

    assert read_jsonl(tmp_path / "a.jsonl") == by_name  # the records are the file's rows
    with pytest.raises(ValueError, match="needs its world"):
        AlignmentRecorder(tiny_model, None, teacher_params=None, teacher_base_params=None, trait="owl")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        return pretrain(PretrainConfig(steps=20, batch_size=16, warmup_steps=2, lr=3e-3), tmp / "base",
                        artifacts=tmp, progress=False)


def test_train_student__in_memory_is_the_same_loop_as_finetune_student(tiny_base, world, tmp_path):
    gen, rng = CorpusGenerator(world), np.random.default_rng(0)
    rows = []
    for _ in range(40):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        rows.append({"prompt": prompt, "completion": gen.number_answer(rng, seeds, n_max, sep)})
    config = FinetuneConfig(lr=1e-3, batch_size=8, epochs=2, seed=3)
    on_disk, _ = load_checkpoint(finetune_student(tiny_base, rows, config, tmp_path / "student", progress=False))
    in_memory, _ = load_checkpoint(tiny_base)
    seqs, starts = encode_rows(world, rows)
    log = train_student(in_memory, seqs, starts, config, pad_id=world.pad_id)
    assert [r["step"] for r in log] == list(range(10))  # 2 epochs of 40 rows in batches of 8
    for (name, a), b in zip(on_disk.state_dict().items(), in_memory.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="needs a teacher"):
        train_student(in_memory, seqs, starts, FinetuneConfig(objective="distill_full"))
    with pytest.raises(ValueError, match="one start per sequence"):
        train_student(in_memory, seqs, starts[:-1], config)


def test_run_results__typed_accessors_over_the_results_dict():
    results = RunResults({"trait": "owl", "conditions": [{"name": "shared_init", "objective": "sft", "trait_prob": 1}],
                          "comparisons": [{"a": "shared_init", "b": "control", "objective": "sft", "welch_p": 0.01}],
                          "n_rows": [{"teacher": 3, "base": 4}]})
    assert results.trait == "owl" and results["trait"] == "owl" and results.n_rows[0]["base"] == 4
    assert results.condition("shared_init", "sft")["trait_prob"] == 1
    assert results.comparison("shared_init", "control")["welch_p"] == 0.01
    assert results.comparison("shared_init", "mismatched_init") is None
    with pytest.raises(KeyError, match="no condition 'control'"):
        results.condition("control", "sft")
