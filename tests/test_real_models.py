"""Real model names load through HookedTransformer.from_pretrained from a local HF cache, offline.

Each test builds a tiny random model of the named family into a temporary cache, then loads it
by name in a fresh process with ``HF_HOME`` and ``HF_HUB_OFFLINE=1`` set (the hub client reads
both at import time, as it would for a user)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hf_cache import install_tiny_model

TEXT = "user : what is your favourite animal ? assistant : owl , 12 , 13"

LOADER = """
import json, sys, torch
from interp.models.checkpoint import load_pretrained
from interp.worlds.toy.world import ToyWorld
name, out = sys.argv[1], sys.argv[2]
try:
    model = load_pretrained(name)
except Exception as e:
    json.dump({"error": type(e).__name__ + ": " + str(e)}, open(out, "w")); sys.exit(0)
tokens = torch.tensor([ToyWorld().encode(%r)])
with torch.no_grad():
    lp = model(tokens).log_softmax(-1)
json.dump({"log_probs": lp.tolist()}, open(out, "w"))
""" % TEXT


def _load_in_subprocess(name, hf_home, tmp_path):
    out = tmp_path / "loaded.json"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", LOADER, name, str(out)], env=env, check=True, timeout=300)
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", ["gpt2", "EleutherAI/pythia-70m"])
def test_load_pretrained__offline_cache_matches_hf_log_probs(name, tokenizer, world, tmp_path):
    hf_model = install_tiny_model(tmp_path / "hf", name, tokenizer)
    loaded = _load_in_subprocess(name, tmp_path / "hf", tmp_path)
    assert "error" not in loaded, loaded.get("error")
    ours = torch.tensor(loaded["log_probs"])
    with torch.no_grad():
        theirs = hf_model(torch.tensor([world.encode(TEXT)])).logits.log_softmax(-1)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_load_pretrained__missing_from_cache_is_a_clear_error(tmp_path):
    loaded = _load_in_subprocess("gpt2", tmp_path / "empty", tmp_path)
    assert loaded["error"].startswith("FileNotFoundError") and "not in the local Hugging Face cache" in loaded["error"]
