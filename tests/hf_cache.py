"""Build tiny random Hugging Face models into a local hub cache, laid out as the hub client
expects (``hub/models--ORG--NAME/{refs/main, snapshots/REV/...}``), so that
``HookedTransformer.from_pretrained(NAME)`` loads them offline."""

from __future__ import annotations

from pathlib import Path

import torch

REVISION = "0" * 40


def _snapshot_dir(hf_home: Path, repo_id: str) -> Path:
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    snap = repo_dir / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def tiny_hf_model(repo_id: str, vocab_size: int, bos_id: int = 0, eos_id: int = 0):
    """A tiny randomly initialised HF causal LM of the family ``repo_id`` belongs to."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    if repo_id == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=64, n_ctx=64, n_embd=32, n_layer=2, n_head=4,
                         bos_token_id=bos_id, eos_token_id=eos_id)
        return GPT2LMHeadModel(cfg).eval()
    if repo_id == "EleutherAI/pythia-70m":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25, bos_token_id=bos_id, eos_token_id=eos_id)
        return GPTNeoXForCausalLM(cfg).eval()
    raise ValueError(f"no tiny builder for {repo_id}")


def install_tiny_model(hf_home: Path, repo_id: str, tokenizer):
    """Save a tiny random model and ``tokenizer`` into the cache under ``repo_id``; returns the HF model."""
    model = tiny_hf_model(repo_id, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    snap = _snapshot_dir(Path(hf_home), repo_id)
    model.save_pretrained(str(snap), safe_serialization=True)
    tokenizer.save_pretrained(str(snap))
    return model
