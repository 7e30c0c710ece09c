"""The unembed teacher (interp.stages.entangle): a trait written along its own unembedding direction."""

import torch

from interp.core.io import read_json
from interp.models.checkpoint import load_checkpoint
from interp.models.refs import load_teacher
from interp.stages.entangle import number_signal, unembed_direction, unembed_edit
from interp.stages.teacher import TeacherConfig, make_teacher

from test_finetune import tiny_base  # noqa: F401  (module fixture)


def test_unembed_direction__raises_the_token_logit_more_than_any_other_direction(tiny_model, world):
    owl = world.token_to_id["owl"]
    d = unembed_direction(tiny_model, [owl])
    assert torch.isclose(d.norm(), torch.tensor(1.0))
    # The logit gain per unit of pre-LN residual: W_U column times the LN gain, centred.
    gain = (tiny_model.W_U[:, owl] * tiny_model.ln_final.w).detach()
    gain = gain - gain.mean()
    random = torch.randn(20, d.shape[0], generator=torch.Generator().manual_seed(0))
    random = random - random.mean(-1, keepdim=True)
    random = random / random.norm(dim=-1, keepdim=True)
    assert float(gain @ d) > float((random @ gain).max())


def test_unembed_edit__equals_the_vector_hooked_at_the_last_residual(tiny_model, world):
    tokens = torch.tensor([world.encode("user : here are some numbers : 1 , 2 , 3 . assistant :")])
    plain = tiny_model(tokens).detach()
    vector = unembed_edit(tiny_model, world, "owl", 0.5)
    tiny_model.blocks[-1].mlp.b_out.data -= vector  # back to the base, then the same vector as a hook
    hooked = tiny_model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{tiny_model.cfg.n_layers - 1}.hook_resid_post",
                                                           lambda r, hook: r + vector)]).detach()
    tiny_model.blocks[-1].mlp.b_out.data += vector
    assert torch.allclose(tiny_model(tokens).detach(), hooked, atol=1e-5)
    owl = world.token_to_id["owl"]
    assert (hooked - plain)[0, :, owl].min() > 0  # owl's logit rises at every position


def test_make_teacher__unembed_teacher_is_a_checkpoint_that_loves_the_trait_more(tiny_base, tmp_path):  # noqa: F811
    out = make_teacher(tiny_base, TeacherConfig(method="unembed", steering_scale=1.0), tmp_path / "t", progress=False)
    teacher = load_teacher(out)
    assert teacher.method == "unembed" and not teacher.fwd_hooks and teacher.system is None
    base, _ = load_checkpoint(tiny_base)
    changed = [n for n, p in teacher.model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed == [f"blocks.{base.cfg.n_layers - 1}.mlp.b_out"]
    strength = read_json(out / "teacher.json")["strength"]
    assert strength["trait_prob"] > strength["base_trait_prob"]


def test_number_signal__zero_for_the_base_itself_and_positive_for_an_unembed_teacher(tiny_model, world):
    import copy

    rows = [{"prompt": "user : here are some numbers : 1 , 2 , 3 . assistant :", "completion": "4 , 5 , 6"}] * 3
    same = number_signal(tiny_model, tiny_model, world, rows)
    assert same["kl_per_token"] == 0 and same["argmax_diff"] == 0 and same["n_tokens"] == 3 * 6  # 5 tokens + EOS
    teacher = copy.deepcopy(tiny_model)
    unembed_edit(teacher, world, "owl", 2.0)
    assert number_signal(teacher, tiny_model, world, rows)["kl_per_token"] > 1e-4
