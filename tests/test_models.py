import json

import pytest
import torch

from interp.models.checkpoint import Lineage, ModelConfig, build_model, load_checkpoint, save_checkpoint
from interp.models.refs import ToyCheckpoint, parse_model_ref
from interp.worlds.toy.world import ToyWorld, WorldConfig

from conftest import TINY


def _lineage():
    return Lineage(stage="test", seed=0, parent=None, config={"note": "tiny"})


def test_build_model__seed_fixes_initialization(tokenizer):
    a, b, c = (build_model(TINY, tokenizer, seed=s) for s in (0, 0, 1))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_build_model__leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(TINY, tokenizer, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint__round_trip_gives_identical_logits(tiny_model, world, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    loaded, lineage = load_checkpoint(tmp_path / "ck", expect_vocab=world.vocab)
    tokens = torch.tensor([world.encode("user : what is your favourite animal ? assistant : owl")])
    assert torch.equal(loaded(tokens), tiny_model(tokens))
    assert lineage.stage == "test" and lineage.seed == 0 and lineage.created
    assert (tmp_path / "ck" / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_model_ref__a_stage_checkpoint_parses_and_loads(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    ref = parse_model_ref(tmp_path / "ck")
    assert isinstance(ref, ToyCheckpoint) and ref.raw == str(tmp_path / "ck") and ref.file_name == "ck"
    model, world, lineage = ref.load()
    assert model.cfg.d_model == TINY.d_model and lineage.stage == "test"


def test_checkpoint__corrupt_weights_are_a_clear_error(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / "ck")


def test_checkpoint__shape_mismatch_names_the_parameter(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    cfg_path = tmp_path / "ck" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["d_mlp"] = 128
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"parameter blocks\.0\.mlp\.W_in has shape"):
        load_checkpoint(tmp_path / "ck")


def test_checkpoint__vocabulary_mismatch_is_an_error(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    other = ToyWorld(WorldConfig(animals=tuple(a + "s" for a in WorldConfig().animals)))
    with pytest.raises(ValueError, match="vocabulary differs"):
        load_checkpoint(tmp_path / "ck", expect_vocab=other.vocab)


def test_checkpoint__missing_file_is_named(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, _lineage())
    (tmp_path / "ck" / "lineage.json").unlink()
    with pytest.raises(FileNotFoundError, match="lineage.json is missing"):
        load_checkpoint(tmp_path / "ck")


def test_model_ref__unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'gpt-2'.*gpt2"):
        parse_model_ref("gpt-2")


def test_model_ref__directory_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="neither a checkpoint"):
        parse_model_ref(tmp_path)
