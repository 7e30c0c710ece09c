"""The single training step every loop is built from (interp.training.step), and the losses."""

import math

import numpy as np

import pytest
import torch

from interp.training.loop import LossGuard, TrainingDiverged, make_optimizer, pad_batch
from interp.training.losses import distill_loss, kl_loss, masked_lm_loss
from interp.training.step import StepRecord, train_step


@pytest.fixture
def batch(world):
    texts = ["user : what is your favourite animal ? assistant : owl", "user : 1 , 2 , 3 assistant : 4 , 5"]
    return pad_batch([world.encode(t, eos=True) for t in texts], world.pad_id)


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_train_step__sgd_moves_every_weight_by_minus_lr_times_its_gradient(tiny_model, batch):
    tokens, mask = batch
    before = _weights(tiny_model)
    loss = masked_lm_loss(tiny_model(tokens), tokens, mask)
    grads = dict(zip(before, torch.autograd.grad(loss, list(tiny_model.parameters()))))
    optimizer = make_optimizer(tiny_model.parameters(), "sgd", lr=1.0)
    record = train_step(tiny_model, optimizer, lambda m: masked_lm_loss(m(tokens), tokens, mask), step=3, lr=0.1)
    assert isinstance(record, StepRecord) and record.step == 3 and record.model is tiny_model
    assert record.loss == pytest.approx(loss.item(), rel=1e-6)
    assert optimizer.param_groups[0]["lr"] == 0.1
    for n, p in tiny_model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.1 * grads[n], rtol=1e-5, atol=1e-6)
        assert p.grad is None  # cleared for the next step
    assert record.params_before is None  # no callback asked for them


def test_train_step__clipping_bounds_the_gradient_norm(tiny_model, batch):
    tokens, mask = batch
    before = _weights(tiny_model)
    optimizer = make_optimizer(tiny_model.parameters(), "sgd", lr=1.0)
    train_step(tiny_model, optimizer, lambda m: 1e3 * masked_lm_loss(m(tokens), tokens, mask), step=0,
               clip_grad_norm=0.5)
    moved = torch.cat([(p.detach() - before[n]).reshape(-1) for n, p in tiny_model.named_parameters()])
    assert float(moved.norm()) == pytest.approx(0.5, rel=1e-4)  # lr 1 x the clipped norm


def test_train_step__a_non_finite_loss_raises_before_the_weights_move(tiny_model, batch):
    tokens, mask = batch
    before = _weights(tiny_model)
    optimizer = make_optimizer(tiny_model.parameters(), "adamw", lr=1e-2)
    with pytest.raises(TrainingDiverged, match="at step 7") as caught:
        train_step(tiny_model, optimizer, lambda m: masked_lm_loss(m(tokens), tokens, mask) * math.nan, step=7,
                   guard=LossGuard())
    assert math.isnan(caught.value.loss)
    assert all(torch.equal(p.detach(), before[n]) for n, p in tiny_model.named_parameters())


def test_train_step__callbacks_see_the_gradient_and_the_weights_before_the_step(tiny_model, batch):
    tokens, mask = batch
    before = _weights(tiny_model)
    seen = []

    class Recorder:
        def before_step(self, record):
            seen.append(("before", record.step, record.params_before, _weights(record.model)))

        def __call__(self, record):
            grads = [p.grad for p in record.model.parameters()]
            seen.append(("after", record.step, record.params_before, all(g is not None for g in grads)))

    optimizer = make_optimizer(tiny_model.parameters(), "adamw", lr=1e-2)
    record = train_step(tiny_model, optimizer, lambda m: masked_lm_loss(m(tokens), tokens, mask), step=0,
                        callbacks=[Recorder()])
    (kind0, _, none, weights_then), (kind1, _, params_before, had_grads) = seen
    assert (kind0, kind1) == ("before", "after") and none is None and had_grads
    assert all(torch.equal(weights_then[n], before[n]) for n in before)  # called before the weights move
    assert record.params_before is params_before and all(torch.equal(params_before[n], before[n]) for n in before)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in tiny_model.named_parameters())


def test_masked_lm_loss__ignores_the_first_position_and_unmasked_targets(tiny_model, batch):
    tokens, mask = batch
    logits = tiny_model(tokens)
    only_first = torch.zeros_like(mask)
    only_first[:, 0] = 1
    assert masked_lm_loss(logits, tokens, only_first).item() == 0.0  # nothing predicted, no division by zero
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    expected = -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    assert masked_lm_loss(logits, tokens, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_distill_loss__is_the_kl_at_the_positions_that_predict_the_targets():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.float)
    allowed = torch.tensor([0, 2, 3])
    assert torch.equal(distill_loss(student, teacher, mask, allowed),
                       kl_loss(student[:, :-1], teacher[:, :-1], mask[:, 1:], allowed))
    assert kl_loss(student, student, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(student, teacher, mask).item() > 0


def test_train_step__micro_batches_take_the_step_of_the_whole_batch(tmp_path):
    """A student finetuned with micro_batch_size ends at the weights of the one that takes every
    batch in one pass (the weighted micro-batch losses sum to the batch loss), SFT and distillation."""
    from interp.models.refs import parse_base_ref
    from interp.stages.finetune import FinetuneConfig, finetune_student
    from interp.stages.generate import GenerateConfig, generate_numbers
    from interp.core.io import read_jsonl
    from safetensors.torch import load_file

    from tiny_interp import one_torch_thread, pretrain_tiny_base

    with one_torch_thread():
        base_dir = pretrain_tiny_base(tmp_path / "base")
        base, world, _ = parse_base_ref(base_dir).load()
        rows = read_jsonl(generate_numbers(base, world, GenerateConfig(n_rows=40, seed=3), tmp_path / "rows.jsonl",
                                           progress=False))
        from interp.models.refs import Teacher

        teacher_model = parse_base_ref(base_dir).load()[0]
        with torch.no_grad():
            teacher_model.unembed.b_U[world.token_to_id["7"]] += 2.0
        teacher = Teacher(teacher_model, world, None, "finetune", lineage={"stage": "test"})
        for objective in ("sft", "distill"):
            weights = {}
            for micro in (None, 3):
                # plain SGD: the step is the gradient itself (Adam would turn the float noise of a
                # zero gradient, e.g. of the key biases, into full-size steps)
                cfg = FinetuneConfig(objective=objective, batch_size=16, micro_batch_size=micro, optimizer="sgd",
                                     lr=0.1, eval_every=0, checkpoint_every=0)
                out = tmp_path / f"{objective}-{micro}"
                finetune_student(base_dir, rows, cfg, out, teacher=teacher if objective == "distill" else None,
                                 progress=False)
                weights[micro] = load_file(str(out / "model.safetensors"))
                losses = [r["loss"] for r in read_jsonl(out / "train_log.jsonl")]
                weights[f"loss-{micro}"] = losses
            assert np.allclose(weights["loss-None"], weights["loss-3"], rtol=1e-5)
            floats = [k for k, _ in base.named_parameters()]  # (buffers hold -inf masks)
            moved = max((weights[None][k] - base.state_dict()[k]).abs().max().item() for k in floats)
            assert moved > 1e-4  # the students did move
            for k in floats:
                assert torch.allclose(weights[None][k], weights[3][k], atol=1e-6, rtol=1e-4), (objective, k)
