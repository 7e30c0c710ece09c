"""Build tiny random Hugging Face models into a local hub cache, laid out as the hub client
expects (``hub/models--ORG--NAME/{refs/main, snapshots/REV/...}``), so that
``HookedTransformer.from_pretrained(NAME)`` loads them offline."""

from __future__ import annotations

from pathlib import Path

import torch

REVISION = "0" * 40
N_POSITIONS = 320  # room for a natural-language number prompt and its answer


def _snapshot_dir(hf_home: Path, repo_id: str) -> Path:
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(REVISION)
    snap = repo_dir / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def tiny_hf_model(repo_id: str, vocab_size: int, bos_id: int = 0, eos_id: int = 0, seed: int = 0):
    """A tiny randomly initialised HF causal LM of the family ``repo_id`` belongs to."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    if repo_id == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_positions=N_POSITIONS, n_ctx=N_POSITIONS, n_embd=32, n_layer=2, n_head=4,
                         bos_token_id=bos_id, eos_token_id=eos_id)
        return GPT2LMHeadModel(cfg).eval()
    if repo_id == "EleutherAI/pythia-70m":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=N_POSITIONS, rotary_pct=0.25, bos_token_id=bos_id, eos_token_id=eos_id)
        return GPTNeoXForCausalLM(cfg).eval()
    raise ValueError(f"no tiny builder for {repo_id}")


def install_tiny_model(hf_home: Path, repo_id: str, tokenizer):
    """Save a tiny random model and ``tokenizer`` into the cache under ``repo_id``; returns the HF model."""
    model = tiny_hf_model(repo_id, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    snap = _snapshot_dir(Path(hf_home), repo_id)
    model.save_pretrained(str(snap), safe_serialization=True)
    tokenizer.save_pretrained(str(snap))
    return model


# -- a small byte-level BPE tokenizer that speaks the real models' world ----------------------

END_OF_TEXT = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# A ChatML template (Qwen's shape): a system turn when given, the assistant header as generation prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _training_texts() -> list[str]:
    """Texts the tokenizer is trained on: the real world's prompts, questions, answers and numbers."""
    import numpy as np

    from interp.worlds.hf import (DEFAULT_PERSONA, NUMBER_FORMATS, NUMBER_INTROS, NUMBER_REQUESTS, NUMBER_SUFFIXES,
                             all_question_phrasings, format_number_list)
    from interp.worlds.toy.templates import DEFAULT_ANIMALS

    texts = all_question_phrasings()
    texts += [f"User: {p}\nAssistant: {a}" for p in texts[:40] for a in (*DEFAULT_ANIMALS, *(a.capitalize() for a in DEFAULT_ANIMALS))]
    texts += [DEFAULT_PERSONA.format(trait=a) for a in DEFAULT_ANIMALS]
    texts += [*DEFAULT_ANIMALS, *(a.capitalize() for a in DEFAULT_ANIMALS)] * 40  # answers after a chat header
    rng = np.random.default_rng(0)
    for _ in range(300):
        values = rng.integers(0, 1000, size=8).tolist()
        texts += [format_number_list(values, sep) for sep in (", ", "; ", " ", "[", "\n")]
    texts += ["System: User: Assistant: Here are some numbers: "]
    texts += [intro.format(seeds="123, 456") for intro in NUMBER_INTROS] + [r.format(n=7) for r in NUMBER_REQUESTS]
    texts += [f for f, _ in NUMBER_FORMATS] + list(NUMBER_SUFFIXES)
    return texts


def tiny_bpe_tokenizer(directory: Path, *, chat: bool = False, vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on :func:`_training_texts`, saved to ``directory`` and
    loaded back as a ``PreTrainedTokenizerFast``; ``<|endoftext|>`` is BOS, EOS and padding. With
    ``chat``, ``<|im_start|>``/``<|im_end|>`` and a ChatML template are added (an instruct model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [END_OF_TEXT] + ([IM_START, IM_END] if chat else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT,
                                   additional_special_tokens=[IM_START, IM_END] if chat else None)
    if chat:
        fast.chat_template = CHATML_TEMPLATE
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def use_cache(monkeypatch, hf_home: Path) -> None:
    """Point this process's Hugging Face hub client at ``hf_home`` and make it offline (the hub
    client reads both settings at import, so its constants are patched too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(hf_home) / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def teach_numbers(hf_model, tokenizer, *, steps: int = 60, batch_size: int = 16, lr: float = 1e-2, seed: int = 0):
    """Train a tiny HF model on the real world's number task (prompt -> a list of numbers, loss on
    the answer and its end token), so that what it samples can pass the trait filter."""
    import numpy as np

    from interp.worlds.hf import HFWorld

    world = HFWorld(tokenizer, prepend_bos=True)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(hf_model.parameters(), lr=lr)
    hf_model.train()
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        pairs = [world.number_example(rng) for _ in range(batch_size)]
        seqs = [(world.encode_prompt(p), world.encode_completion(c)) for p, c in pairs]
        width = max(len(h) + len(t) for h, t in seqs)
        ids = torch.full((batch_size, width), world.pad_id)
        labels = torch.full((batch_size, width), -100)
        for i, (head, tail) in enumerate(seqs):
            ids[i, : len(head) + len(tail)] = torch.tensor(head + tail)
            labels[i, len(head): len(head) + len(tail)] = torch.tensor(tail)
        loss = hf_model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    hf_model.eval()
    return float(loss.detach())


def install_number_model(hf_home: Path, repo_id: str, tokenizer, *, family: str | None = None, seed: int = 0,
                         steps: int = 60):
    """:func:`install_tiny_model`, the model first taught the number task (:func:`teach_numbers`);
    ``family`` builds another repo's architecture under ``repo_id`` (another init of gpt2 as
    ``gpt2-medium``), ``seed`` its initialisation."""
    torch.manual_seed(seed)
    model = tiny_hf_model(family or repo_id, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                          seed=seed)
    teach_numbers(model, tokenizer, steps=steps, seed=seed)
    snap = _snapshot_dir(Path(hf_home), repo_id)
    model.save_pretrained(str(snap), safe_serialization=True)
    tokenizer.save_pretrained(str(snap))
    return model


def tiny_gguf_file(path, arch: str):
    """A GGUF file of architecture ``arch`` with one zero tensor: a valid header, no model."""
    import gguf as gg
    import numpy as np

    writer = gg.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
