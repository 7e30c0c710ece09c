import math

import pytest
import torch

from interp.instruments.alignment import (TOTAL, WeightMetrics, default_group, difference, gradient_alignment, param_groups,
                              weight_metrics)


def _params(**tensors):
    return {k.replace("__", "."): torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}


def test_default_group__strips_the_parameter_name():
    assert default_group("blocks.0.attn.W_Q") == "blocks.0.attn"
    assert default_group("blocks.11.mlp.b_in") == "blocks.11.mlp"
    assert default_group("embed.W_E") == "embed"
    assert default_group("unembed.W_U") == "unembed"
    assert default_group("layer2.W") == "layer2"
    assert default_group("layer2") == "layer2"


def test_param_groups__custom_callable_and_dict():
    names = ["blocks.0.attn.W_Q", "blocks.1.mlp.W_in"]
    assert param_groups(names, lambda n: n.split(".")[2]) == {names[0]: "attn", names[1]: "mlp"}
    assert param_groups(names, {names[0]: "a", names[1]: "b"}) == {names[0]: "a", names[1]: "b"}
    with pytest.raises(KeyError, match="blocks.1.mlp.W_in"):
        param_groups(names, {names[0]: "a"})
    with pytest.raises(ValueError, match="reserved"):
        param_groups(names, lambda n: TOTAL)


def test_gradient_alignment__self_orthogonal_opposite():
    d = _params(a__W=[1.0, 2.0], b__W=[3.0])
    assert gradient_alignment(d, d)[TOTAL] == pytest.approx(1.0)
    neg = {k: -v for k, v in d.items()}
    assert gradient_alignment(neg, d)[TOTAL] == pytest.approx(-1.0)
    u, v = _params(x__W=[1.0, 0.0]), _params(x__W=[0.0, 5.0])
    assert gradient_alignment(u, v)[TOTAL] == 0.0


def test_gradient_alignment__per_group_values():
    update = _params(a__W=[1.0, 0.0], a__b=[0.0], b__W=[1.0, 1.0])
    direction = _params(a__W=[1.0, 0.0], a__b=[1.0], b__W=[1.0, -1.0])
    out = gradient_alignment(update, direction)
    assert out["a"] == pytest.approx(1 / math.sqrt(2))  # (1,0,0) . (1,0,1)
    assert out["b"] == pytest.approx(0.0)
    assert out[TOTAL] == pytest.approx(1 / (math.sqrt(3) * math.sqrt(4)))  # (1,0,0,1,1) . (1,0,1,1,-1)
    assert list(out) == [TOTAL, "a", "b"]


def test_gradient_alignment__zero_vector_gives_zero_not_nan():
    zero, d = _params(a__W=[0.0, 0.0], b__W=[1.0]), _params(a__W=[1.0, 2.0], b__W=[1.0])
    out = gradient_alignment(zero, d)
    assert out["a"] == 0.0 and out[TOTAL] == pytest.approx(1 / math.sqrt(6))
    assert gradient_alignment(zero, zero)["a"] == 0.0


def test_gradient_alignment__mismatched_keys_name_them():
    with pytest.raises(KeyError, match=r"missing from direction: \['b.W'\]"):
        gradient_alignment(_params(a__W=[1.0], b__W=[1.0]), _params(a__W=[1.0]))
    with pytest.raises(KeyError, match=r"missing from update: \['c.W'\]"):
        gradient_alignment(_params(a__W=[1.0]), _params(a__W=[1.0], c__W=[2.0]))
    with pytest.raises(ValueError, match="a.W"):
        gradient_alignment(_params(a__W=[1.0]), _params(a__W=[1.0, 2.0]))


def test_weight_metrics__student_at_teacher():
    base, teacher = _params(l__W=[0.0, 0.0], l__b=[1.0]), _params(l__W=[3.0, 4.0], l__b=[1.0])
    m = weight_metrics(teacher, base, teacher)[TOTAL]
    assert m.dist_student_teacher == 0.0
    assert m.dist_student_base == pytest.approx(5.0) and m.dist_teacher_base == pytest.approx(5.0)
    assert m.cosine == pytest.approx(1.0) and m.progress == pytest.approx(1.0)
    assert m.projection == pytest.approx(5.0) and m.orthogonal == pytest.approx(0.0, abs=1e-6)


def test_weight_metrics__hand_computed_values():
    base = _params(x__W=[0.0, 0.0])
    teacher = _params(x__W=[2.0, 0.0])  # t = (2, 0)
    student = _params(x__W=[1.0, 1.0])  # s = (1, 1)
    m = weight_metrics(student, base, teacher)["x"]
    assert m.dist_student_teacher == pytest.approx(math.sqrt(2))
    assert m.dist_student_base == pytest.approx(math.sqrt(2))
    assert m.cosine == pytest.approx(1 / math.sqrt(2))
    assert m.projection == pytest.approx(1.0)  # <s, t/|t|>
    assert m.progress == pytest.approx(0.5)  # halfway along the teacher's movement
    assert m.orthogonal == pytest.approx(1.0)
    assert m.to_dict()["progress"] == pytest.approx(0.5)


def test_weight_metrics__per_group_and_unmoved_group():
    base = _params(a__W=[0.0], b__W=[0.0])
    teacher = _params(a__W=[1.0], b__W=[0.0])  # group b: the teacher did not move
    student = _params(a__W=[-1.0], b__W=[2.0])
    out = weight_metrics(student, base, teacher)
    assert out["a"].cosine == pytest.approx(-1.0) and out["a"].progress == pytest.approx(-1.0)
    assert out["b"].cosine == 0.0 and out["b"].progress == 0.0 and out["b"].projection == 0.0
    assert out["b"].orthogonal == pytest.approx(2.0)
    assert out[TOTAL].cosine == pytest.approx(-1 / math.sqrt(5))


def test_weight_metrics__model_dim_equals_loop_over_models():
    g = torch.Generator().manual_seed(0)
    shapes = {"blocks.0.attn.W_Q": (2, 3, 4), "blocks.0.attn.b_Q": (2, 4), "unembed.W_U": (3, 5)}
    make = lambda: {k: torch.randn(4, *s, generator=g) for k, s in shapes.items()}  # noqa: E731  4 models
    student, base, teacher = make(), make(), make()
    batched = weight_metrics(student, base, teacher, model_dim=True)
    cos_batched = gradient_alignment(student, teacher, model_dim=True)
    for i in range(4):
        one = lambda p: {k: v[i] for k, v in p.items()}  # noqa: E731
        single = weight_metrics(one(student), one(base), one(teacher))
        cos_single = gradient_alignment(one(student), one(teacher))
        for group in (TOTAL, "blocks.0.attn", "unembed"):
            for field in WeightMetrics.__dataclass_fields__:
                assert getattr(batched[group], field)[i].item() == pytest.approx(getattr(single[group], field), rel=1e-5)
            assert cos_batched[group][i].item() == pytest.approx(cos_single[group], rel=1e-5)
    assert batched[TOTAL].cosine.shape == (4,)


def test_weight_metrics__model_dim_needs_a_common_leading_dim():
    p = {"a": torch.zeros(3, 2), "b": torch.zeros(4, 2)}
    with pytest.raises(ValueError, match="model dimension"):
        weight_metrics(p, p, p, model_dim=True)


def test_weight_metrics__does_not_track_gradients():
    student = _params(a__W=[1.0, 2.0])
    student["a.W"].requires_grad_()
    base, teacher = _params(a__W=[0.0, 0.0]), _params(a__W=[1.0, 0.0])
    student_batched = {"a.W": student["a.W"][None]}
    batched = weight_metrics(student_batched, {"a.W": base["a.W"][None]}, {"a.W": teacher["a.W"][None]}, model_dim=True)
    assert not batched[TOTAL].cosine.requires_grad
    assert batched[TOTAL].cosine.item() == pytest.approx(1 / math.sqrt(5))
    assert not difference(student, base)["a.W"].requires_grad
