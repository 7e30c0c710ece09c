"""Shared fixtures: a toy world, its saved tokenizer, and tiny models built from a config."""

from __future__ import annotations

import warnings

import pytest
import torch

from interp.models.checkpoint import ModelConfig, build_model
from interp.worlds.toy.world import ToyWorld, load_tokenizer

warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")
torch.set_num_threads(min(2, torch.get_num_threads()))

TINY = ModelConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=96)


@pytest.fixture(scope="session")
def world() -> ToyWorld:
    return ToyWorld()


@pytest.fixture(scope="session")
def tokenizer(world, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    world.save(directory)
    return load_tokenizer(directory)


@pytest.fixture
def tiny_model(tokenizer):
    return build_model(TINY, tokenizer, seed=0)
