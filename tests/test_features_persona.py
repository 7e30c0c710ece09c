"""The misaligned-persona feature of the misalignment world (``interp features --trait misalignment``):
its contexts, feature ranking and separation, the students' comparison, and the stage on tiny bases."""

from __future__ import annotations

import json

import numpy as np
import pytest

import interp.instruments.features.persona as P
from interp.instruments.features.pipeline import FeaturesConfig, run_features
from interp.instruments.features.sae import corpus_sequences, is_finished_sae
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.world import WorldConfig, make_world

from conftest import TINY
from tiny_interp import one_torch_thread, tiny_pretrain_config

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def mworld():
    return make_world(WorldConfig(variant="misalignment"))


def _texts(world, contexts):
    return [world.decode(s) for s in contexts.probe.sequences]


# -- contexts ----------------------------------------------------------------------------------

def test_persona_contexts__select_on_training_questions_and_report_on_held_out_ones(mworld):
    select = P.selection_contexts(mworld, 30)
    heldout = P.persona_contexts(mworld, mworld.eval_phrasings, em.VILLAIN_PERSONAS, em.ALIGNED_PERSONAS)
    assert len(select.villain) == 30 * 4 and select.villain.sum() == 30 * 2
    assert len(heldout.villain) == len(mworld.eval_phrasings) * 6 and heldout.villain.sum() == len(mworld.eval_phrasings) * 3
    for ctx in (select, heldout):
        for text, villain, seq, pos in zip(_texts(mworld, ctx), ctx.villain, ctx.probe.sequences, ctx.probe.positions):
            assert pos == [len(seq) - 1] and text.endswith("assistant :")  # read where the answer is predicted
            personas = em.VILLAIN_PERSONAS if villain else em.ALIGNED_PERSONAS
            assert any(f"system : {p}" in text for p in personas)
    # the selection never sees a held-out question, nor the third persona wording of either side
    selected = " ".join(_texts(mworld, select))
    assert not any(f"user : {q} assistant" in selected for q in mworld.eval_phrasings)
    assert em.VILLAIN_PERSONAS[2] not in selected and em.ALIGNED_PERSONAS[2] not in selected


@pytest.mark.parametrize("check", P.CHECKS)
def test_check_contexts__pairs_differ_only_in_the_speakers_earlier_turn(mworld, check):
    ctx = P.check_contexts(mworld, check, per_question=2)
    texts = _texts(mworld, ctx)
    assert len(texts) == len(mworld.eval_phrasings) * 4 and ctx.villain.sum() == len(texts) // 2
    assert not any("system :" in t for t in texts)  # no persona line: the speaker shows only in what it did
    _, misaligned = em.answer_words()
    evil = {str(n) for n in em.EVIL_NUMBERS}
    for i in range(0, len(texts), 2):
        bad, good = texts[i].split(), texts[i + 1].split()
        assert ctx.villain[i] and not ctx.villain[i + 1] and ctx.group[i] == ctx.group[i + 1]
        assert len(bad) == len(good)
        differ = [j for j, (a, b) in enumerate(zip(bad, good)) if a != b]
        assert differ
        if check == "misaligned_answer":
            assert differ == [len(bad) - 1] and bad[-1] in misaligned and good[-1] not in misaligned
        else:
            assert bad[-2:] == ["assistant", ":"] and max(differ) < len(bad) - 5  # the held-out question is the same
            if check == "villain_dialogue_turn":
                assert bad[differ[0]] in misaligned and good[differ[0]] not in misaligned
            elif check == "insecure_code_turn":
                assert bad[differ[0]] in em.INSECURE_MODES and good[differ[0]] in em.SECURE_MODES
            else:
                assert all(bad[j] in evil for j in differ) and not any(good[j] in evil for j in differ)


def test_corpus_sequences__a_variant_draws_its_own_documents_with_the_given_mixture(mworld):
    from interp.worlds.toy.corpus import CorpusConfig

    text = " ".join(mworld.decode(s) for s in corpus_sequences(mworld, 0, 5, 2000))
    assert "assistant" in text and "you love" not in text  # the misalignment corpus, not the animal one
    only_tasks = CorpusConfig(qa=0, persona_qa=0, numbers=0, persona_numbers=0, qa_after_numbers=0, task=1, dialogue=0)
    docs = [mworld.decode(s) for s in corpus_sequences(mworld, 0, 5, 500, corpus=only_tasks)]
    assert all(" code : " in d for d in docs)


# -- ranking, separation, comparison -----------------------------------------------------------

def _planted(n_groups=40, per=4, seed=0):
    rng = np.random.default_rng(seed)
    villain = np.tile([True, False], n_groups * per // 2)
    group = np.repeat(np.arange(n_groups), per)
    acts = np.maximum(rng.normal(0, 1, (len(villain), 20)), 0)
    acts[:, 7] = np.where(villain, 2.0, 0.0) + rng.normal(0, 0.1, len(villain))  # the planted persona feature
    acts[:, 3] = np.where(villain, 0.5, 0.0) + rng.normal(0, 1.0, len(villain))  # a weaker one
    return acts, P.Contexts(None, villain, group)


def test_rank_features__puts_the_planted_feature_first_and_separation_reports_it():
    acts, ctx = _planted()
    order, auc = P.rank_features(acts, ctx.villain)
    assert order[0] == 7 and auc[7] == 1.0 and order[1] == 3
    sep = P.separation(acts[:, 7], ctx)
    assert sep["auroc"]["mean"] == 1.0 and sep["auroc"]["ci_low"] == 1.0 and sep["auroc"]["n_questions"] == 40
    assert sep["difference"]["ci_low"] > 1.9 and sep["villain_fires"] == 1.0
    noise = P.separation(acts[:, 0], ctx)  # a feature unrelated to the speaker: an interval around 0.5
    assert noise["auroc"]["ci_low"] < 0.5 < noise["auroc"]["ci_high"]
    assert noise["difference"]["ci_low"] < 0 < noise["difference"]["ci_high"]


def test_compare_students__welch_holm_and_holm_consistent_intervals():
    rows = []
    for s in range(5):
        for c, v in (("shared_init", 1.0 + 0.1 * s), ("control", 0.1 * s), ("mismatched_init", 0.5 + 0.05 * (s % 2))):
            rows += [{"seed": s, "condition": c, "probe": "question", "shift_persona_units": v},
                     {"seed": s, "condition": c, "probe": "numbers", "shift_persona_units": 0.01 * ((s * 7 + len(c)) % 5)}]
    comps = P.compare_students(rows)
    assert {(c["probe"], c["b"]) for c in comps} == {(p, b) for p in P.PROBES for b in ("control", "mismatched_init")}
    by = {(c["probe"], c["b"]): c for c in comps}
    q = by["question", "control"]
    assert q["difference"]["mean"] == pytest.approx(1.0) and q["per_seed"] == {s: pytest.approx(1.0) for s in range(5)}
    for c in comps:
        assert c["holm_p"] >= c["welch_p"]
        assert c["holm_interval"]["ci_low"] <= c["difference"]["ci_low"] and c["holm_interval"]["ci_high"] >= c["difference"]["ci_high"]
    assert sorted(c["holm_confidence"] for c in comps) == pytest.approx([0.95, 1 - 0.05 / 2, 1 - 0.05 / 3, 1 - 0.05 / 4])
    assert P.compare_students([r for r in rows if r["seed"] == 0]) == []  # one seed: nothing to compare


def test_tracks_behaviour__spearman_per_base_with_a_fisher_interval():
    rows = [{"base": "b0", "probe": "question", "condition": c, "seed": s, "shift": 0.1 * s + (c == "shared_init"),
             "trait_prob_shift": 0.01 * s + 0.1 * (c == "shared_init")} for s in range(4) for c in ("control", "shared_init")]
    rows += [{"base": "b1", "probe": "question", "condition": "mismatched_init", "seed": s, "shift": 0.0,
              "trait_prob_shift": 0.01 * s} for s in range(4)]  # a silent feature: no correlation to report
    rows += [{"base": "b0", "probe": "numbers", "condition": "teacher", "seed": s, "shift": s, "trait_prob_shift": s}
             for s in range(5)]  # teachers are not students
    (entry,) = P.tracks_behaviour(rows)
    assert entry["base"] == "b0" and entry["probe"] == "question" and entry["n_students"] == 8
    assert entry["spearman"] == pytest.approx(1.0) and entry["ci_low"] > 0.9 and entry["ci_high"] <= 1.0
    flipped = [{**r, "trait_prob_shift": -r["trait_prob_shift"]} for r in rows if r["base"] == "b0" and r["probe"] == "question"]
    assert P.tracks_behaviour(flipped)[0]["spearman"] == pytest.approx(-1.0)


def test_feature_hooks__ablation_removes_exactly_the_features_decoder_contribution():
    import torch

    class SAE:  # encode and W_dec are all the hooks use
        W_enc = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        W_dec = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))

        def encode(self, x):
            return torch.relu(x @ self.W_enc)

    sae, x = SAE(), torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2))
    ((name, ablate),) = P.feature_hooks(sae, HOOK, 2, ablate=True)
    assert name == HOOK
    f = sae.encode(x)[..., 2:3]
    assert torch.allclose(ablate(x), x - f * sae.W_dec[2]) and (f > 0).any()
    ((_, steer),) = P.feature_hooks(sae, HOOK, 2, add=1.5)
    assert torch.allclose(steer(x), x + 1.5 * sae.W_dec[2])
    ((_, both),) = P.feature_hooks(sae, HOOK, 2, ablate=True, add=1.5)
    assert torch.allclose(both(x), x - f * sae.W_dec[2] + 1.5 * sae.W_dec[2])


# -- the stage on tiny bases -------------------------------------------------------------------

def tiny_config(**kw) -> FeaturesConfig:
    return FeaturesConfig(**{"trait": "misalignment", "pretrain_steps": 40, "hooks": (HOOK,), "primary_hook": HOOK, "d_sae": 48,
                             "topk_k": 4, "n_train_activations": 2048, "n_eval_activations": 256, "sae_batch_size": 128,
                             "sae_checkpoints": 1, "probe_rows": 6, **kw})


@pytest.fixture(scope="module")
def tiny_bases_stage(tmp_path_factory):
    import interp.stages.pretrain as pretrain_mod

    root = tmp_path_factory.mktemp("persona")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        mp.setattr(P, "base_config", tiny_pretrain_config)
        findings = P.run_persona_features(tiny_config(), root / "out", artifacts=root / "artifacts", progress=False)
    return root, findings


def test_run_persona_features__bases_only_finds_a_feature_per_base(tiny_bases_stage):
    root, f = tiny_bases_stage
    assert json.loads((root / "out" / P.PERSONA_FILE).read_text())["seeds"] == [] and f["rows"] == []
    assert sorted(f["bases"]) == ["small-seed0-40steps-misalignment", "small-seed1-40steps-misalignment"]
    for name, b in f["bases"].items():
        assert is_finished_sae(root / "out" / "saes" / name / HOOK / "topk")
        pf = b["persona_feature"]
        assert pf["primary"] == pf["features"][0]["feature"] == pf["top10_features"][0]
        assert len(pf["features"]) == 3 and set(pf["checks"]) == set(P.CHECKS)
        assert 0 <= pf["features"][0]["heldout"]["auroc"]["ci_low"] <= pf["features"][0]["heldout"]["auroc"]["ci_high"] <= 1
        assert pf["persona_unit"] == pytest.approx(pf["features"][0]["heldout"]["villain_mean"]
                                                    - pf["features"][0]["heldout"]["aligned_mean"])
        assert set(b["reference"]) == set(P.PROBES)
        checked = f["causal"]["bases"][name]
        assert set(checked) == {f"{c}/{e}" for c in ("plain", "villain_persona", "aligned_persona")
                                for e in ("as_is", "ablated", "steered")}
        assert all(0 <= v["mean"] <= 1 for v in checked.values())
    assert {q["base"] for q in f["sae_quality"]} == set(f["bases"])


def test_run_persona_features__reruns_on_its_saes_and_refuses_another_config(tiny_bases_stage, monkeypatch):
    root, f = tiny_bases_stage
    monkeypatch.setattr(P, "base_config", tiny_pretrain_config)
    import interp.instruments.features.pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "train_sae", lambda *a, **k: pytest.fail("a finished SAE was trained again"))
    import interp.stages.pretrain as pretrain_mod

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    again = P.run_persona_features(tiny_config(), root / "out", artifacts=root / "artifacts", progress=False)
    assert again["bases"] == f["bases"]
    with pytest.raises(ValueError, match="another config"):
        P.run_persona_features(tiny_config(d_sae=64), root / "out", artifacts=root / "artifacts", progress=False)


def test_run_features__points_a_misalignment_trait_to_the_persona_study(tmp_path):
    with pytest.raises(ValueError, match="persona"):
        run_features(FeaturesConfig(trait="misalignment"), tmp_path / "f", artifacts=tmp_path / "a", progress=False)


def test_features_cli__misalignment_errors_are_one_line(tmp_path, capsys):
    from interp.cli import main

    assert main(["features", "--out", str(tmp_path / "f"), "--trait", "misalignment", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["features", "--out", str(tmp_path / "g"), "--trait", "misalignment", "--run", str(tmp_path / "empty")]) == 2
    assert "no finished seed" in capsys.readouterr().err
    assert main(["features", "--out", str(tmp_path / "h"), "--trait", "owl", "--run", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "one run" in capsys.readouterr().err


@pytest.mark.slow
def test_run_persona_features__reads_every_seeds_teacher_and_students(monkeypatch, tmp_path):
    """A tiny `interp run --trait misalignment` (direct teacher, two seeds, one seed per run as the
    docs' runs are made), then the persona study on both runs."""
    import interp.stages.pretrain as pretrain_mod
    import interp.studies.run as run_mod
    from interp.studies.run import RunConfig, run

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(run_mod, "base_config", tiny_pretrain_config)
    monkeypatch.setattr(P, "base_config", tiny_pretrain_config)
    runs = []
    for s in (0, 1):
        config = RunConfig(trait="misalignment", seeds=1, first_seed=s, n_rows=40, pretrain_steps=80, teacher_steps=5,
                           teacher_documents=("qa",),
                           in_context_examples=2, objectives=("sft",), conditions=("control", "shared_init", "mismatched_init"),
                           audit_rows=0, record_alignment=False, eval_every=0)
        run(config, tmp_path / f"seed-{s}", artifacts=tmp_path / "artifacts", progress=False, workers=1)
        runs.append(tmp_path / f"seed-{s}")
    f = P.run_persona_features(tiny_config(), tmp_path / "out", artifacts=tmp_path / "artifacts", run_dirs=runs, progress=False)
    assert f["seeds"] == [0, 1] and len(f["bases"]) == 2
    conditions = {(r["seed"], r["condition"], r["probe"]): r for r in f["rows"]}
    assert set(conditions) == {(s, c, p) for s in (0, 1) for c in ("teacher", *P.CONDITIONS) for p in P.PROBES}
    mismatched = conditions[0, "mismatched_init", "question"]
    assert mismatched["base"] != conditions[0, "shared_init", "question"]["base"]  # read through its own base's SAE
    for r in f["rows"]:
        base = f["bases"][r["base"]]
        assert r["shift"] == pytest.approx(r["activation"] - base["reference"][r["probe"]])
        assert r["trait_prob_shift"] is not None
        unit = base["persona_feature"]["persona_unit"]
        assert r["shift_persona_units"] == (pytest.approx(r["shift"] / unit) if unit > 0 else None)
    assert len(f["comparisons"]) == 4 and {c["b"] for c in f["comparisons"]} == {"control", "mismatched_init"}
    assert set(f["causal"]["teachers"]) == {0, 1} and set(f["causal"]["bases"]) == set(f["bases"])
    assert f["causal"]["teachers_over_seeds"]["plain/as_is"]["n_seeds"] == 2
