"""Attribution of a trait's log-probability to SAE features per position (attribution patching
and integrated gradients through spliced sae-lens SAEs), checked against the plain model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.instruments.features.attribution import TraitTarget, ablation_check, attribute, trait_score, _rows
from interp.models.checkpoint import ModelConfig, build_model

TWO_LAYERS = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=96)
HOOKS = ("blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.1.hook_resid_pre", "blocks.1.hook_attn_out")


def random_sae(d_in: int, d_sae: int, seed: int, kind: str = "topk"):
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=6)) if kind == "topk" else StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae) / d_in ** 0.5)
        sae.W_dec.copy_(sae.W_enc.T.clone() * 0.8)
        sae.b_enc.fill_(0.05)
        sae.b_dec.copy_(torch.randn(d_in) * 0.1)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


@pytest.fixture
def model(tokenizer):
    m = build_model(TWO_LAYERS, tokenizer, seed=3)
    with torch.no_grad():  # larger weights than at init, so that positions matter
        for name, p in m.named_parameters():
            if name.endswith(("W_Q", "W_K", "W_V", "W_O")):
                p.mul_(4)
    return m


@pytest.fixture
def saes(model):
    return {h: random_sae(model.cfg.d_model, 48, i, "topk" if i % 2 == 0 else "l1") for i, h in enumerate(HOOKS)}


def prompts(world, n: int = 5):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        nums = " , ".join(str(v) for v in rng.integers(0, 1000, size=3 + i))
        out.append(world.encode(f"user : here are some numbers : {nums} . what is your favourite animal ? assistant :"))
    return out


def owl(world, contrast: bool = True) -> TraitTarget:
    return TraitTarget("owl", ((world.token_to_id["owl"],),),
                       tuple((world.token_to_id[a],) for a in world.animals if a != "owl") if contrast else ())


def plain_linear_total(model, hook, prompt, trait, x0):
    """sum_p dm/dx_p . (x_p - x0) over the prompt positions but <bos>, from the plain model."""
    tokens, _, rows, plen = _rows([prompt], trait, 0)
    store = {}

    def leaf(act, hook):
        store["x"] = act.detach().requires_grad_(True)
        return store["x"]

    with torch.enable_grad(), model.hooks(fwd_hooks=[(hook, leaf)]):
        value = trait_score(model(tokens), trait, rows, plen).sum()
        (g,) = torch.autograd.grad(value, store["x"])
    g = g.sum(0)  # the rows of the one prompt
    x = store["x"].detach()[0]
    return float((g[1:len(prompt)] * (x[1:len(prompt)] - x0)).sum())


def test_attribute__features_plus_error_equal_the_linear_total_from_the_plain_model(model, saes, world):
    ps = prompts(world)
    trait = owl(world)
    att = attribute(model, saes, ps, trait, pad_id=world.token_to_id["<pad>"])
    for h in HOOKS:
        x0 = saes[h].b_dec
        for i, p in enumerate(ps):
            expected = plain_linear_total(model, h, p, trait, x0)
            got = float(att.summed(h)[i])
            assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (h, i)
            assert float(att.linear_total[h][i]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
        # the error term is not negligible here: leaving it out would fail the check above
        assert float(att.error[h].abs().sum()) > 1e-3 * float(att.summed(h).abs().sum()) + 1e-6
    # positions past each prompt and <bos> carry nothing
    assert float(att.features[HOOKS[0]][0, len(ps[0]):].abs().sum()) == 0
    assert float(att.features[HOOKS[0]][:, 0].abs().sum()) == 0
    # at the last attention output only the last position reaches the answer
    last = att.per_position("blocks.1.hook_attn_out")[0, 1:len(ps[0]) - 1]
    assert float(last.abs().max()) < 1e-6


def test_attribute__integrated_gradients_are_the_midpoint_rule_of_the_true_change(model, saes, world):
    """Integrated gradients with S points add up to sum_k m'(a_k) / S, a_k = (k + 1/2) / S, where
    m(a) is the trait's score with the hook's prompt positions at x0 + a (x - x0): the midpoint
    rule for m(1) - m(0), the true change (``ablation_total``). m' is taken here by central finite
    differences on the plain model, independently of the SAE split."""
    ps = prompts(world, 1)
    trait = owl(world)
    steps = 6
    tokens, spliced, rows, plen = _rows(ps, trait, 0)
    for h in ("blocks.0.hook_attn_out", "blocks.1.hook_resid_pre"):
        sae = saes[h]
        ig = attribute(model, {h: sae}, ps, trait, method="integrated", steps=steps)
        x0 = sae.decode(torch.zeros(sae.cfg.d_sae))

        def m(alpha):
            def hook(act, hook):
                return torch.where(spliced[..., None], x0 + alpha * (act - x0), act)
            with torch.no_grad(), model.hooks(fwd_hooks=[(h, hook)]):
                return trait_score(model(tokens).double(), trait, rows, plen)[0]

        eps = 1e-3
        midpoint = sum(float(m(a + eps) - m(a - eps)) / (2 * eps) for a in [(k + 0.5) / steps for k in range(steps)]) / steps
        assert float(ig.summed(h)[0]) == pytest.approx(midpoint, rel=2e-3, abs=1e-4), h
        assert float(ig.ablation_total[h][0]) == pytest.approx(float(m(1.0) - m(0.0)), abs=1e-5)
        assert torch.isnan(ig.linear_total[h]).all()  # a first-order total is not what integrated gradients add up to


def test_trait_score__multi_token_target_and_contrast_by_teacher_forcing(model, world):
    ids = world.token_to_id
    trait = TraitTarget("t", ((ids["owl"],), (ids["cat"], ids["dog"])), ((ids["eagle"],),))
    p = prompts(world, 1)[0]
    tokens, _, rows, plen = _rows([p], trait, 0)
    with torch.no_grad():
        got = float(trait_score(model(tokens), trait, rows, plen)[0])
        lp1 = model(torch.tensor([p]))[0, -1].log_softmax(-1)
        lp2 = model(torch.tensor([p + [ids["cat"]]]))[0, -1].log_softmax(-1)
    owl_, catdog, eagle = lp1[ids["owl"]], lp1[ids["cat"]] + lp2[ids["dog"]], lp1[ids["eagle"]]
    target = torch.logsumexp(torch.stack([owl_, catdog]), 0)
    expected = target - torch.logsumexp(torch.stack([owl_, catdog, eagle]), 0)
    assert got == pytest.approx(float(expected), abs=1e-5)


def test_attribute__a_prompt_alone_and_in_a_padded_batch_agree(model, saes, world):
    ps = prompts(world, 4)
    trait = owl(world, contrast=False)
    batch = attribute(model, saes, ps, trait)
    alone = attribute(model, saes, ps[:1], trait)
    n = len(ps[0])
    for h in HOOKS:
        assert torch.allclose(batch.features[h][0, :n], alone.features[h][0, :n], atol=1e-5)


def test_ablation_check__effects_are_true_single_feature_ablations(model, saes, world):
    ps = prompts(world, 3)
    trait = owl(world)
    att = attribute(model, saes, ps, trait)
    check = ablation_check(model, saes, att, trait, n_samples=20, seed=1)
    assert check.n == 20 and -1 <= check.spearman <= 1
    r = check.samples[0]  # the largest attribution: redo its ablation by hand
    h, i, pos, f = r["hook"], r["prompt"], r["position"], r["feature"]
    a = float(att.activations[h][i, pos, f])

    def drop(act, hook):
        out = act.clone()
        out[:, pos] -= a * saes[h].W_dec[f]
        return out

    tokens, _, rows, plen = _rows([ps[i]], trait, 0)
    with torch.no_grad(), model.hooks(fwd_hooks=[(h, drop)]):
        ablated = float(trait_score(model(tokens), trait, rows, plen)[0])
    assert r["ablation_effect"] == pytest.approx(float(att.score[i]) - ablated, abs=1e-5)
    assert abs(r["attribution"]) == max(abs(s["attribution"]) for s in check.samples)


def test_trait_target__names_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        TraitTarget("x", ())
    with pytest.raises(ValueError, match="both a target and a contrast"):
        TraitTarget("x", ((1,),), ((1,),))


def _summary(score: float, feats: dict[str, np.ndarray]) -> dict:
    return {"score": score, "hooks": {h: {"features": v} for h, v in feats.items()}}


def test_compare_conditions__finds_the_feature_the_shared_students_raise_over_control():
    from interp.instruments.features.trait_attribution import compare_conditions

    rng = np.random.default_rng(0)
    d = 12
    base = {"A": _summary(-2.0, {"h": rng.normal(size=d)}), "B": _summary(-2.1, {"h": rng.normal(size=d)})}
    teachers = {s: _summary(-1.0, {"h": base["A"]["hooks"]["h"]["features"] + np.eye(d)[3] * 2}) for s in range(4)}
    students = []
    for s in range(4):
        noise = lambda: rng.normal(scale=0.01, size=d)  # noqa: E731
        students += [
            {"seed": s, "objective": "sft", "condition": "control", "base": "A",
             "summary": _summary(-2.0, {"h": base["A"]["hooks"]["h"]["features"] + noise()})},
            {"seed": s, "objective": "sft", "condition": "shared_init", "base": "A",
             "summary": _summary(-1.5, {"h": base["A"]["hooks"]["h"]["features"] + np.eye(d)[3] + noise()})},
            {"seed": s, "objective": "sft", "condition": "mismatched_init", "base": "B",
             "summary": _summary(-2.1, {"h": base["B"]["hooks"]["h"]["features"] + noise()})}]
    out = compare_conditions(base, teachers, students, "A", {"A": {"h": [0]}, "B": {"h": [1]}}, n_top=2, n_exploratory=3)
    sft = out["objectives"]["sft"]
    smc = sft["shared_minus_control"]
    assert [e["feature"] for e in smc["rising"]] == [3] and smc["rising"][0]["mean"] == pytest.approx(1, abs=0.05)
    assert 0 in {e["feature"] for e in smc["features"]}  # the trait feature is always tested
    assert sft["mismatched_minus_base"]["rising"] == [] and sft["mismatched_minus_base"]["base"] == "B"
    assert smc["exploratory"][0]["feature"] == 3
    assert sft["score_change"]["shared_init"]["mean"] == pytest.approx(0.5)
    assert out["teacher"]["top_features"][0]["feature"] == 3
