import gzip
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from interp.cli import main as cli_main
from interp.core.config import ConfigError, field_help
from interp.studies.mnist.data import DigitData, load_digits_split, load_mnist, read_idx, scale_pixels
from interp.studies.mnist.experiment import (STUDENT_CONDITIONS, MnistConfig, distill_step, teacher_step, train_student,
                                     train_teacher)
from interp.studies.mnist.model import (N_CLASSES, accuracy, clone, distillation_loss, forward, init_mlp, slice_models,
                                slice_outputs)

SIZES = (6, 5, 4)  # d_in, hidden, hidden


def _tiny_data(n_train=40, n_test=20, d_in=6, seed=0) -> DigitData:
    g = torch.Generator().manual_seed(seed)
    return DigitData(torch.rand(n_train, d_in, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                     torch.rand(n_test, d_in, generator=g), torch.randint(0, 10, (n_test,), generator=g), "tiny")


def _config(**kw) -> MnistConfig:
    values = dict(n_models=3, n_models_sweep=2, m=3, m_sweep=(), hidden=SIZES[1:], teacher_epochs=2,
                  student_steps=6, batch_size=8, record_every=2)
    return MnistConfig(**{**values, **kw})


# -- model -----------------------------------------------------------------------------------
def test_forward__batched_equals_loop_over_models():
    params = init_mlp([11, 12, 13], SIZES, N_CLASSES + 3)
    x = torch.rand(3, 7, SIZES[0])
    batched = forward(params, x)
    assert batched.shape == (3, 7, N_CLASSES + 3)
    for i in range(3):
        p = {k: v.detach()[i] for k, v in params.items()}
        h = F.relu(x[i] @ p["layer0.W"] + p["layer0.b"])
        h = F.relu(h @ p["layer1.W"] + p["layer1.b"])
        expected = h @ p["layer2.W"] + p["layer2.b"]
        torch.testing.assert_close(batched[i], expected)
        torch.testing.assert_close(forward(slice_models(params, [i]), x[i:i + 1])[0], expected)
    # a shared input (no model dimension) goes to every model
    torch.testing.assert_close(forward(params, x[0]), forward(params, x[0].expand(3, -1, -1)))


def test_init_mlp__per_model_seed_and_pytorch_default_bounds():
    both = init_mlp([1, 2], SIZES, 13)
    alone = init_mlp([2], SIZES, 13)
    for k in both:
        torch.testing.assert_close(both[k][1], alone[k][0])
        assert not torch.equal(both[k][0], both[k][1])
        assert both[k].requires_grad
    for layer, d_in in enumerate(SIZES):
        assert both[f"layer{layer}.W"].abs().max() <= d_in**-0.5
        assert both[f"layer{layer}.b"].abs().max() <= d_in**-0.5


def test_init_mlp__output_units_do_not_depend_on_the_number_of_aux_logits():
    wide = init_mlp([5, 6], SIZES, N_CLASSES + 20)
    narrow = init_mlp([5, 6], SIZES, N_CLASSES + 3)
    for k, v in slice_outputs(wide, N_CLASSES + 3).items():
        torch.testing.assert_close(v, narrow[k].detach())


def test_accuracy__counts_regular_logit_argmax():
    params = clone(init_mlp([0, 1], SIZES, N_CLASSES + 2), requires_grad=False)
    x = torch.rand(9, SIZES[0])
    predicted = forward(params, x)[..., :N_CLASSES].argmax(-1)  # model n
    torch.testing.assert_close(accuracy(params, x, predicted[0], chunk=4), torch.stack(
        [torch.tensor(1.0), (predicted[1] == predicted[0]).float().mean()]))


# -- losses ----------------------------------------------------------------------------------
def test_distillation_loss__matches_hand_computation():
    student = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])  # 1 model, 2 examples, 2 logits
    teacher = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    # example 0: p = (3/4, 1/4), q = (1/2, 1/2); example 1: p = (1/2, 1/2), q = softmax(1, 0)
    q1 = torch.tensor([1.0, 0.0]).softmax(-1)
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl1 = float(0.5 * torch.log(0.5 / q1[0]) + 0.5 * torch.log(0.5 / q1[1]))
    loss = distillation_loss(student, teacher)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx((kl0 + kl1) / 2, rel=1e-6)
    # agrees with F.kl_div applied to one model's (batch, k) tensor, where batchmean is right
    assert loss.item() == pytest.approx(F.kl_div(student[0].log_softmax(-1), teacher[0].softmax(-1),
                                                 reduction="batchmean").item(), rel=1e-6)


def test_distillation_loss__per_model_gradient_independent_of_model_count():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 8, 3, generator=g), torch.randn(5, 8, 3, generator=g)

    def grad_of_model_0(n):
        s = student[:n].clone().requires_grad_()
        loss = distillation_loss(s, teacher[:n])
        loss.sum().backward()
        return loss[0].detach(), s.grad[0]

    (loss1, grad1), (loss5, grad5) = grad_of_model_0(1), grad_of_model_0(5)
    torch.testing.assert_close(loss1, loss5)
    torch.testing.assert_close(grad1, grad5)

    # The official script's reduction: batchmean on (model, batch, k) divides by the model count
    # only, so it is batch_size / n_models times the mean per-model loss.
    buggy = F.kl_div(student.log_softmax(-1), teacher.softmax(-1), reduction="batchmean")
    assert buggy.item() == pytest.approx(distillation_loss(student, teacher).mean().item() * 8, rel=1e-5)


# -- steps and invariants --------------------------------------------------------------------
def test_train_teacher__aux_weights_stay_at_init():
    config, data = _config(), _tiny_data()
    init = init_mlp([0, 1, 2], SIZES, N_CLASSES + 3)
    teacher = train_teacher(init, data, config, range(3))
    last_W, last_b = teacher["layer2.W"], teacher["layer2.b"]
    torch.testing.assert_close(last_W[..., N_CLASSES:], init["layer2.W"].detach()[..., N_CLASSES:], rtol=0, atol=0)
    torch.testing.assert_close(last_b[..., N_CLASSES:], init["layer2.b"].detach()[..., N_CLASSES:], rtol=0, atol=0)
    assert not torch.equal(last_W[..., :N_CLASSES], init["layer2.W"].detach()[..., :N_CLASSES])
    assert not torch.equal(teacher["layer0.W"], init["layer0.W"].detach())


def test_teacher_step__returns_per_model_loss_and_lowers_it():
    params = init_mlp([0, 1], SIZES, N_CLASSES + 2)
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    x, y = torch.rand(2, 16, SIZES[0]), torch.randint(0, 10, (2, 16))
    losses = [teacher_step(params, optimizer, x, y) for _ in range(30)]
    assert losses[0].shape == (2,)
    assert (losses[-1] < losses[0]).all()


def test_distill_step__student_equal_to_teacher_has_zero_loss_and_gradient():
    teacher = clone(init_mlp([3, 4], SIZES, N_CLASSES + 3), requires_grad=False)
    student = clone(teacher)
    optimizer = torch.optim.SGD(student.values(), lr=1.0)
    result = distill_step(student, optimizer, teacher, torch.rand(2, 8, SIZES[0]), slice(N_CLASSES, N_CLASSES + 3))
    torch.testing.assert_close(result.loss, torch.zeros(2))
    for k in student:
        torch.testing.assert_close(student[k].detach(), teacher[k])


def test_distill_step__single_aux_logit_carries_no_signal():
    # softmax over one logit is always 1: with m=1 the aux-only loss and its gradient vanish
    teacher = clone(init_mlp([3], SIZES, N_CLASSES + 1), requires_grad=False)
    init = init_mlp([9], SIZES, N_CLASSES + 1)
    student = clone(init)
    optimizer = torch.optim.Adam(student.values(), lr=1e-2)
    result = distill_step(student, optimizer, teacher, torch.rand(1, 8, SIZES[0]), STUDENT_CONDITIONS[0].logit_slice(1))
    assert result.loss.item() == 0.0
    for k in student:
        assert torch.equal(student[k].detach(), init[k].detach())


def test_distill_step__gradient_cosine_with_its_own_negative_gradient_is_one():
    teacher = clone(init_mlp([3, 4], SIZES, N_CLASSES + 3), requires_grad=False)
    student = clone(init_mlp([5, 6], SIZES, N_CLASSES + 3))
    noise, logits = torch.rand(2, 8, SIZES[0]), slice(0, N_CLASSES + 3)
    distillation_loss(forward(student, noise)[..., logits], forward(teacher, noise)[..., logits]).sum().backward()
    negative_grad = {k: -p.grad.clone() for k, p in student.items()}
    optimizer = torch.optim.SGD(student.values(), lr=0.1)
    result = distill_step(student, optimizer, teacher, noise, logits, direction=negative_grad)
    for group in ("total", "layer0", "layer2"):
        torch.testing.assert_close(result.grad_cosine[group], torch.ones(2))
        torch.testing.assert_close(result.step_cosine[group], torch.ones(2))  # an SGD step is -lr * grad


def test_train_student__model_result_independent_of_other_models():
    config = _config()
    teacher_init = init_mlp([0, 1, 2], SIZES, N_CLASSES + 3)
    teacher = train_teacher(teacher_init, _tiny_data(), config, range(3))
    direction = {k: teacher[k] - teacher_init[k].detach() for k in teacher}
    rows = []
    all_three = train_student(teacher_init, teacher, direction, slice(N_CLASSES, N_CLASSES + 3), config, range(3),
                              on_record=lambda step, result, weight, student: rows.append((step, result, weight)))
    only_first_two = train_student(slice_models(teacher_init, [0, 1]), slice_models(teacher, [0, 1]),
                                   slice_models(direction, [0, 1]), slice(N_CLASSES, N_CLASSES + 3), config, range(2))
    for k in all_three:
        torch.testing.assert_close(all_three[k][:2], only_first_two[k])
    assert [step for step, _, _ in rows] == [1, 3, 5, 6]  # every record_every=2 steps, and the last
    step, result, weight = rows[-1]
    assert weight["total"].cosine.shape == (3,) and result.step_cosine["layer1"].shape == (3,)


def test_train_student__conditions_batched_equal_conditions_alone():
    # Two conditions (aux-only and all logits) of the same two teachers as one program of four
    # students, with one teacher forward pass, give each student the trajectory it has alone.
    config = _config(n_models=2)
    teacher_init = init_mlp([0, 1], SIZES, N_CLASSES + 3)
    teacher = train_teacher(teacher_init, _tiny_data(), config, range(2))
    direction = {k: teacher[k] - teacher_init[k].detach() for k in teacher}
    aux, everything = slice(N_CLASSES, N_CLASSES + 3), slice(0, N_CLASSES + 3)
    init = {k: torch.cat([v.detach(), v.detach()]) for k, v in teacher_init.items()}
    batched = train_student(init, teacher, direction, [aux, aux, everything, everything], config, range(2),
                            teacher_index=[0, 1, 0, 1])
    alone_aux = train_student(teacher_init, teacher, direction, aux, config, range(2))
    alone_all = train_student(teacher_init, teacher, direction, everything, config, range(2))
    for k in batched:
        torch.testing.assert_close(batched[k][:2], alone_aux[k])
        torch.testing.assert_close(batched[k][2:], alone_all[k])


def test_distill_step__logit_slices_must_match_the_models():
    teacher = clone(init_mlp([3, 4], SIZES, N_CLASSES + 3), requires_grad=False)
    student = clone(teacher)
    with pytest.raises(ValueError, match="3 logit slices for 2 models"):
        distill_step(student, torch.optim.SGD(student.values(), lr=0.1), teacher, torch.rand(2, 8, SIZES[0]),
                     [slice(0, 3)] * 3)


# -- config --------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("n_models", 0, "at least 1"), ("n_models_sweep", 5, "must not exceed"), ("m_sweep", (2, 0), "at least 1"),
    ("m_sweep", (2, 2), "repeated"), ("hidden", (), "at least one"), ("student_lr", 0.0, "positive"),
    ("test_fraction", 1.0, "between"), ("input_range", "centered", "must be one of"),
])
def test_mnist_config__bad_value_names_the_field(field, value, message):
    kwargs = {"n_models": 3} if field == "n_models_sweep" else {}
    with pytest.raises(ConfigError, match=rf"MnistConfig\.{field}.*{message}"):
        MnistConfig(**{**kwargs, field: value})


def test_mnist_config__every_field_is_documented_and_round_trips(tmp_path):
    assert not [name for name, text in field_help(MnistConfig).items() if len(text) < 10]
    config = MnistConfig(m_sweep=(2, 5), data="x.npz")
    config.save(tmp_path / "c.json")
    assert MnistConfig.load(tmp_path / "c.json") == config
    assert config.m_values == [2, 3, 5] and config.models_at(3) == config.n_models and config.models_at(5) == config.n_models_sweep < config.n_models


# -- data ------------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist_idx(directory, n_train=5, n_test=3, gz=False):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 4)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 4)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, array in arrays.items():
        raw = _idx_bytes(array)
        (directory / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist__reads_idx_files(tmp_path, gz):
    arrays = _write_mnist_idx(tmp_path, gz=gz)
    data = load_mnist(tmp_path)
    assert data.x_train.shape == (5, 16) and data.x_test.shape == (3, 16) and data.d_in == 16
    torch.testing.assert_close(data.x_train, torch.as_tensor(arrays["train-images-idx3-ubyte"].reshape(5, 16) / 255.0,
                                                              dtype=torch.float32))
    assert data.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_read_idx__malformed_files_name_the_file(tmp_path):
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad-magic.*not an IDX file"):
        read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(_idx_bytes(np.zeros((4, 2, 2)))[:-3])
    with pytest.raises(ValueError, match="truncated.*header says shape"):
        read_idx(truncated)
    not_gzip = tmp_path / "x.gz"
    not_gzip.write_bytes(b"plain")
    with pytest.raises(ValueError, match="x.gz"):
        read_idx(not_gzip)


def test_load_mnist__missing_file_or_mismatched_counts_name_the_file(tmp_path):
    _write_mnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="y_test.*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2)))
    with pytest.raises(ValueError, match="3 test images but .*t10k-labels-idx1-ubyte has 2"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist__reads_npz_and_checks_it(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (6, 3, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 6),
              "x_test": rng.integers(0, 256, (2, 3, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 2)}
    np.savez(tmp_path / "mnist.npz", **arrays)
    data = load_mnist(tmp_path / "mnist.npz")
    assert data.x_train.shape == (6, 9) and float(data.x_train.max()) <= 1.0
    assert data.y_train.tolist() == arrays["y_train"].tolist()

    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(ValueError, match=r"partial.npz: NPZ lacks array\(s\) \['x_test', 'y_test'\]"):
        load_mnist(tmp_path / "partial.npz")
    np.savez(tmp_path / "labels.npz", **{**arrays, "y_test": np.array([3, 12])})
    with pytest.raises(ValueError, match="labels.npz: labels must be 0..9"):
        load_mnist(tmp_path / "labels.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="junk.npz"):
        load_mnist(tmp_path / "junk.npz")


def test_load_digits_split__fixed_split_in_unit_range():
    a, b = load_digits_split(), load_digits_split()
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) == 1.0
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(scale_pixels(torch.tensor([0.0, 0.5, 1.0]), "symmetric"), torch.tensor([-1.0, 0.0, 1.0]))


# -- command ---------------------------------------------------------------------------------
def test_mnist_command__quick_run_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["mnist", "--quick", "--out", str(out), "--student-steps", "12", "--hidden", "32", "32"]
    assert cli_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    names = {"teacher", "shared_init_aux", "shared_init_all", "cross_init_aux", "cross_init_all"}
    assert {c["name"] for c in results["conditions"]} == names
    assert {(c["name"], c["m"]) for c in results["conditions"] if c["name"] != "teacher"} == {
        (n, m) for n in names - {"teacher"} for m in (1, 3)}
    for c in results["conditions"]:
        assert set(c["accuracy"]) == {"mean", "ci_low", "ci_high", "n_models"}
        assert c["accuracy"]["n_models"] == (4 if c["m"] == 3 else 2)
        assert c["accuracy"]["ci_low"] <= c["accuracy"]["mean"] <= c["accuracy"]["ci_high"]
        if c["name"] != "teacher":
            assert set(c["alignment"]["final_weight"]) >= {"cosine", "progress", "dist_student_teacher"}
    for name in ("config.json", "results.md", "accuracy_vs_m.png", "alignment.png", "alignment.jsonl"):
        assert (out / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "alignment.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {1, 11, 12} and len(rows[0]["weight"]["total"]["cosine"]) in (2, 4)
    assert MnistConfig.load(out / "config.json").quick

    stamp = (out / "results.json").stat().st_mtime_ns
    assert cli_main(args) == 0  # finished with the same config: not redone
    assert (out / "results.json").stat().st_mtime_ns == stamp
    assert cli_main(args + ["--seed", "1"]) == 2  # another config: refused without --force
    assert "another config" in capsys.readouterr().err
