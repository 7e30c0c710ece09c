"""Sampling number continuations from a model: the *generate* stage.

Two layers:

* :func:`sample_completions`: the suite's own batched sampler for a TransformerLens
  ``HookedTransformer`` (KV cache, prompts bucketed by exact length so a batch needs no padding,
  finished rows dropped from the batch, optional ``fwd_hooks`` such as steering vectors). It runs
  the lean cached forward of :mod:`interp.stages.lean_forward` over the model's own weights where that
  supports the model and the hooks (the toy models, hooks on the residual stream), and
  TransformerLens's cached forward otherwise (real models with rotary, grouped-query attention...);
* :func:`generate_numbers`: the stage. It builds ``n_rows`` paper-shaped number prompts, samples
  one completion each and writes ``{"id", "system", "prompt", "completion", "ended_with_eos",
  "model"}`` rows to a JSONL file, with its :class:`GenerateConfig` saved beside it. A finished
  file with the same config is reused; an interrupted run resumes from the batches it finished.

Reproducibility guarantee of :func:`sample_completions`: the random draws of row ``i`` come
from its own stream, ``numpy.random.default_rng([seed, i, SAMPLING_STREAM])``, one uniform per
generated position (inverse-CDF sampling), so row ``i``'s completion depends only on ``seed``,
``i``, its prompt, the model (and hooks), ``temperature`` and ``max_new_tokens`` - not on the
other prompts, their order or the batch size. Two calls with the same arguments give identical
output. Across different batch compositions the logits can differ in the last floating-point
bits (matrix kernels depend on the batch shape), which can change a draw only when its uniform
falls within about 1e-6 of a boundary of the cumulative distribution: practically never, but not
bitwise guaranteed. ``SAMPLING_STREAM`` keeps the sampling stream apart from the stream
``default_rng([seed, i])`` that :func:`number_prompts` uses to draw prompt ``i``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.core.config import ConfigError, StageConfig, option
from interp.core.io import JsonlAppender, _json_default, read_jsonl, write_jsonl
from interp.domains import DOMAIN_NAMES, domain
from interp.stages.lean_forward import (
    LEAN_BLOCK_HOOK_NAMES,
    LEAN_TOP_HOOK_NAMES,
    LeanCachedForward,
    lean_hooks,
    lean_unsupported_reason,
)
from interp.training.loop import pad_batch
from interp.worlds.protocol import World

log = logging.getLogger(__name__)

SAMPLING_STREAM = 0x5EED  # third entry of every row's sampling seed (see the module docstring)
PARTIAL_SUFFIX = ".partial.jsonl"  # finished batches of an unfinished file: OUT.partial.jsonl
CONFIG_SUFFIX = ".config.json"  # OUT.jsonl -> OUT.config.json
DROP_FINISHED_FRACTION = 0.125  # finished rows leave a batch once they are this fraction of it (see _generate_batch)


# -- the sampler -----------------------------------------------------------------------------

@dataclass
class Completions:
    """Sampled completions, parallel to the prompts they continue.

    ``tokens[i]`` are the new token ids of prompt ``i`` without the EOS; ``ended_with_eos[i]``
    says whether the model emitted EOS (False: cut off at ``max_new_tokens``)."""

    tokens: list[list[int]] = field(default_factory=list)
    ended_with_eos: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_new_tokens(self) -> int:
        """Tokens the model generated, EOS included."""
        return sum(len(t) for t in self.tokens) + sum(self.ended_with_eos)


def plan_batches(lengths: Sequence[int], batch_size: int, *, padded: bool = False) -> list[list[int]]:
    """Group prompt indices into batches of equal prompt length (so no padding is needed), or with
    ``padded`` into batches of similar length (left-padded by the sampler).

    Buckets are taken in order of length, indices in their original order within a bucket, and
    each bucket is cut into chunks of at most ``batch_size``; with ``padded`` the indices sorted by
    length (stable) are cut into chunks of ``batch_size``. The plan depends only on the lengths,
    ``batch_size`` and ``padded``. A real tokenizer gives nearly every prompt its own length, so
    exact buckets would hold a row or two each: real models sample padded batches."""
    if padded:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(n, []).append(i)
    return [rows[s:s + batch_size] for n in sorted(buckets) for rows in [buckets[n]]
            for s in range(0, len(rows), batch_size)]


def row_uniforms(seed: int, rows: Sequence[int], n: int) -> Float[Tensor, "batch new_pos"]:
    """The ``n`` uniforms in [0, 1) that drive the sampling of each row (float64)."""
    return torch.from_numpy(np.stack([np.random.default_rng([seed, int(r), SAMPLING_STREAM]).random(n)
                                      for r in rows]))


def sample_from_logits(logits: Float[Tensor, "batch d_vocab"], uniforms: Float[Tensor, "batch"],
                       temperature: float) -> Int[Tensor, "batch"]:
    """One token per row: argmax when ``temperature == 0``, else the inverse-CDF draw of
    ``softmax(logits / temperature)`` at ``uniforms`` (an exact sample of that distribution)."""
    if temperature == 0:
        return logits.argmax(-1)
    cdf = (logits.double() / temperature).softmax(-1).cumsum(-1)  # batch d_vocab
    # first token whose cumulative probability exceeds u (a zero-probability token never is)
    target = (uniforms * cdf[:, -1]).unsqueeze(-1)  # batch 1
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(logits.shape[-1] - 1)


class TransformerLensCachedForward:
    """TransformerLens's own cached forward, behind the interface of
    :class:`interp.stages.lean_forward.LeanCachedForward`: call it with the prompts, then with one new
    token per row per step (returns the logits at the last position); :meth:`keep_rows` drops
    finished rows. Used for models (and hooks) the lean forward does not support."""

    def __init__(self, model, batch: int, prompt_mask: Int[Tensor, "batch pos"] | None = None):
        from transformer_lens import TransformerLensKeyValueCache

        self.model = model
        self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)
        self.started = False
        self.prompt_mask = prompt_mask  # 0 at left padding (padded batches), None: no padding

    def __call__(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab"]:
        ones = torch.ones_like(tokens)  # explicit mask: a sampled <pad> is not taken for padding
        if not self.started and self.prompt_mask is not None:
            ones = self.prompt_mask.to(tokens.device)
        if not self.started and tokens.shape[1] > 1:  # fill the cache without unembedding every prompt position
            self.model(tokens[:, :-1], past_kv_cache=self.cache, attention_mask=ones[:, :-1], return_type=None)
            tokens, ones = tokens[:, -1:], ones[:, -1:]
        self.started = True
        return self.model(tokens, past_kv_cache=self.cache, attention_mask=ones)[:, -1]

    def keep_rows(self, keep: Tensor) -> None:
        """Drop finished rows from the cache (batch is dimension 0 of every tensor)."""
        for entry in self.cache.entries:
            entry.past_keys = entry.past_keys[keep]
            entry.past_values = entry.past_values[keep]
        self.cache.previous_attention_mask = self.cache.previous_attention_mask[keep]


def _generate_batch(model, prompt_tokens: Int[Tensor, "batch pos"], uniforms: Float[Tensor, "batch new_pos"], *,
                    eos_id: int, temperature: float, lean_hooks: dict | None = None,
                    stop_ids: Sequence[int] = (), prompt_mask: Tensor | None = None) -> tuple[list[list[int]], list[bool]]:
    """Continue one batch of equal-length prompts; ``uniforms`` fixes ``max_new_tokens``. A row
    ends at ``eos_id`` or any of ``stop_ids`` (a chat model's end-of-turn token).

    ``lean_hooks`` (hook name -> functions, see :func:`interp.stages.lean_forward.lean_hooks`) selects the
    lean forward; None selects TransformerLens's, which runs under the caller's ``model.hooks``.
    ``prompt_mask`` (0 at left padding) marks a left-padded batch. Runs under the
    caller's ``inference_mode``. Returns (new tokens without EOS, ended_with_eos) per row."""
    batch, max_new_tokens = uniforms.shape
    device = model.cfg.device
    prompt_tokens = prompt_tokens.to(device)
    if lean_hooks is not None:
        forward = LeanCachedForward(model, batch, prompt_tokens.shape[1] + max_new_tokens, lean_hooks,
                                    prompt_mask=prompt_mask)
    else:
        forward = TransformerLensCachedForward(model, batch, prompt_mask)
    logits = forward(prompt_tokens)  # batch d_vocab

    out = torch.full((batch, max_new_tokens), -1, dtype=torch.long)
    length = torch.full((batch,), max_new_tokens, dtype=torch.long)
    ended = torch.zeros(batch, dtype=torch.bool)
    rows = torch.arange(batch)  # rows (of this batch) in the forward's cache, in order
    done = torch.zeros(batch, dtype=torch.bool)  # which of `rows` have emitted EOS
    stops = torch.tensor(sorted({eos_id, *stop_ids}), dtype=torch.long)
    for t in range(max_new_tokens):
        live = ~done
        new = torch.full((len(rows),), eos_id, dtype=torch.long)  # a finished row is fed EOS, and ignored
        new[live] = sample_from_logits(logits[live], uniforms[rows[live], t].to(logits.device), temperature).cpu()
        out[rows[live], t] = new[live]
        is_eos = live & (new == eos_id if len(stops) == 1 else torch.isin(new, stops))
        length[rows[is_eos]] = t
        ended[rows[is_eos]] = True
        done |= is_eos
        if done.all() or t + 1 == max_new_tokens:
            break
        # Finished rows leave the cache in groups: dropping rows copies the whole cache, so each
        # drop waits until it removes at least DROP_FINISHED_FRACTION of the rows.
        if done.any() and done.sum() >= DROP_FINISHED_FRACTION * len(rows):
            keep = ~done
            forward.keep_rows(keep.to(device))
            rows, new, done = rows[keep], new[keep], done[keep]
        logits = forward(new[:, None].to(device))  # rows d_vocab
    return [out[i, : length[i]].tolist() for i in range(batch)], ended.tolist()


Engine = Literal["auto", "lean", "transformer_lens"]
ENGINES: tuple[str, ...] = ("auto", "lean", "transformer_lens")


def choose_engine(model, fwd_hooks: list | None, engine: Engine = "auto") -> dict | None:
    """The hooks for the lean forward (hook name -> functions) when it is to be used, else None
    (TransformerLens's forward).

    ``auto`` uses the lean forward when it supports the model and every hook (see
    :mod:`interp.stages.lean_forward`), ``lean`` requires it (a ``ValueError`` says why it cannot),
    ``transformer_lens`` never uses it."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}: choose one of {list(ENGINES)}")
    if engine == "transformer_lens":
        return None
    reason = lean_unsupported_reason(model)
    hooks = lean_hooks(model, fwd_hooks) if reason is None else None
    if reason is None and hooks is None:
        reason = (f"hooks outside {LEAN_BLOCK_HOOK_NAMES + LEAN_TOP_HOOK_NAMES} were given, or hooks are "
                  "already attached to the model")
    if reason is not None:
        if engine == "lean":
            raise ValueError(f"engine='lean' cannot run here: {reason}")
        log.debug("sampling through TransformerLens's forward: %s", reason)
    return hooks


def padded_batches(model, fwd_hooks: list | None = None, engine: Engine = "auto") -> bool:
    """Whether prompts of different lengths share left-padded batches: with TransformerLens's
    forward, and with the lean one on rotary models (every modern tokenizer's prompts have nearly
    all different lengths). Models with learned positions on the lean forward (the toy world) keep
    equal-length batches, whose samples do not depend on padding."""
    return choose_engine(model, fwd_hooks, engine) is None or model.cfg.positional_embedding_type == "rotary"


def _run_batches(model, prompts: Sequence[Sequence[int]], batches: Sequence[Sequence[int]], *, eos_id: int,
                 max_new_tokens: int, temperature: float, seed: int, fwd_hooks: list | None, progress: bool,
                 on_batch: Callable[[list[int], list[list[int]], list[bool]], None], engine: Engine = "auto",
                 stop_ids: Sequence[int] = (), pad_id: int | None = None) -> None:
    """Generate the given batches (lists of indices into ``prompts``), calling ``on_batch`` after each.

    The lean forward calls the hooks itself; TransformerLens's has them attached only inside
    this call (``model.hooks`` removes them on any exit)."""
    from tqdm.auto import tqdm

    lean = choose_engine(model, fwd_hooks, engine)
    attached = [] if lean is not None else list(fwd_hooks or [])
    with torch.inference_mode(), model.hooks(fwd_hooks=attached), \
            tqdm(total=sum(len(b) for b in batches), disable=not progress, desc="generate", unit="row") as bar:
        for rows in batches:
            lengths = {len(prompts[i]) for i in rows}
            mask = None
            if len(lengths) == 1:
                tokens = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long)  # batch pos
            else:  # left-padded: every row's last prompt token is at the last position
                tokens, mask = pad_batch([prompts[i] for i in rows], pad_id, side="left")
                mask = mask.long()
            uniforms = row_uniforms(seed, rows, max_new_tokens)
            new, ended = _generate_batch(model, tokens, uniforms, eos_id=eos_id, temperature=temperature,
                                         lean_hooks=lean, stop_ids=stop_ids, prompt_mask=mask)
            on_batch(list(rows), new, ended)
            bar.update(len(rows))


def _check_sampling_args(model, prompts, *, max_new_tokens: int, temperature: float, seed: int, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be non-negative (0 is greedy)")
    if seed < 0:
        raise ValueError(f"seed={seed}: must be non-negative")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be at least 1")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("an empty prompt cannot be continued (prompts start with <bos>)")
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                         f"model's n_ctx={model.cfg.n_ctx}")


def sample_completions(model, prompts: list[list[int]], *, eos_id: int, max_new_tokens: int,
                       temperature: float = 1.0, seed: int, batch_size: int = 256,
                       fwd_hooks: list | None = None, progress: bool = True, engine: Engine = "auto",
                       stop_ids: Sequence[int] = (), pad_id: int | None = None) -> Completions:
    """Sample one completion per prompt (token ids, each starting with BOS if the model expects one).

    Prompts of equal length are batched together (at most ``batch_size`` per batch, no padding)
    and the results are returned in the order of ``prompts``. A row stops at EOS (which is not
    part of its completion), at any of ``stop_ids`` (e.g. a chat model's end-of-turn token, also
    left out and counted as EOS), or after ``max_new_tokens`` tokens; a batch stops when all its rows
    have. ``temperature == 0`` is greedy decoding. ``fwd_hooks`` (``[(hook_name, fn), ...]``)
    are applied to every forward pass and removed afterwards, also on error. ``engine`` picks the
    forward pass (:func:`choose_engine`; ``auto``: the lean one where it supports the model and
    hooks). See the module docstring for the reproducibility guarantee."""
    _check_sampling_args(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                         batch_size=batch_size)
    tokens: list[list[int] | None] = [None] * len(prompts)
    ended: list[bool] = [False] * len(prompts)

    def collect(rows: list[int], new: list[list[int]], eos: list[bool]) -> None:
        for i, t, e in zip(rows, new, eos):
            tokens[i], ended[i] = t, e

    padded = padded_batches(model, fwd_hooks, engine)
    _run_batches(model, prompts, plan_batches([len(p) for p in prompts], batch_size, padded=padded), eos_id=eos_id,
                 max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, fwd_hooks=fwd_hooks,
                 progress=progress, on_batch=collect, engine=engine, stop_ids=stop_ids,
                 pad_id=eos_id if pad_id is None else pad_id)
    return Completions(tokens=[t if t is not None else [] for t in tokens], ended_with_eos=ended)


# -- the stage -------------------------------------------------------------------------------

@dataclass
class GenerateConfig(StageConfig):
    """Which number prompts a model continues, and how it samples.

    Row ``i`` gets prompt :func:`number_prompts` ``(world, n_rows, seed)[i]`` and is sampled from
    its own random stream (see the module docstring), so a larger ``n_rows`` with the same seed
    extends a file without changing its first rows."""

    n_rows: int = option(3000, "Number prompts to continue (rows of the raw file, before filtering).")
    seed: int = option(0, "Seed of the prompts and of the sampling; row i uses streams [seed, i] and [seed, i, 0x5EED].")
    temperature: float = option(1.0, "Sampling temperature; 0 is greedy decoding (the paper sampled at 1).")
    max_new_tokens: int = option(
        24, "Most tokens sampled per row, EOS included; 24 fits 10 numbers with separators, brackets, a period and EOS. "
        "A row cut off here has ended_with_eos false.")
    batch_size: int = option(256, "Prompts per forward pass (prompts of one length are batched together).")
    domain: str = option("numbers", "What the prompts ask for (interp.domains): numbers (the paper's number "
                         "continuations), code (toy code tasks) or cot (toy word problems); code and cot rows carry "
                         "their task (tests, answer) in the field 'task'.")
    system: str | None = option(
        None, "System prompt: in the toy world space-separated words (e.g. 'you love owl .'), put before every prompt as "
        "'system : {system}'; for a real model its chat template's system turn (or 'System: ...' in the plain format). "
        "The file's prompt field stays without it; it is kept in the field 'system'.")

    def validate(self) -> None:
        self.require(self.n_rows > 0, "n_rows", "must be positive")
        self.require(self.seed >= 0, "seed", "must be non-negative (it seeds numpy SeedSequences)")
        self.require(self.temperature >= 0, "temperature", "must be non-negative (0 is greedy)")
        self.require(self.max_new_tokens > 0, "max_new_tokens", "must be positive")
        self.require(self.batch_size > 0, "batch_size", "must be positive")
        self.require(self.domain in DOMAIN_NAMES, "domain", f"unknown domain {self.domain!r}; the domains are "
                     f"{', '.join(DOMAIN_NAMES)}")
        require_system_text(self, "system")


def require_system_text(config: StageConfig, field_name: str) -> None:
    """Check a system-prompt field of ``config`` (None, or the text :meth:`World.encode_prompt`
    puts after ``system :``): non-empty, and not already starting with ``system``."""
    text = getattr(config, field_name)
    if text is not None:
        config.require(bool(text.strip()), field_name, "must be None or non-empty text")
        config.require(text.split()[0] != "system", field_name, "give only the text; 'system :' is put in front of it")


def number_prompts(world: World, n_rows: int, seed: int) -> list[str]:
    """The ``n_rows`` paper-shaped number prompts of ``world`` for ``seed`` (the toy world's are
    chat text ``user : ... assistant :``, a real model's natural language); prompt ``i`` is drawn
    from ``numpy.random.default_rng([seed, i])`` alone."""
    return world.number_prompts(n_rows, seed)


def config_path_for(out_path: str | Path) -> Path:
    """Where the config of a generated file lives: ``x.raw.jsonl`` -> ``x.raw.config.json`` (one per
    file, so several generated files can share a directory)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + CONFIG_SUFFIX)


def partial_path_for(out_path: str | Path) -> Path:
    """Where finished batches of an unfinished run go: ``x.raw.jsonl`` -> ``x.raw.partial.jsonl``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + PARTIAL_SUFFIX)


def _normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(obj, default=_json_default))


def _config_differences(saved: GenerateConfig, wanted: GenerateConfig) -> list[str]:
    a, b = saved.to_dict(), wanted.to_dict()
    return [f"{k}: {a[k]!r} there, {b[k]!r} now" for k in a if a[k] != b[k]]


def _load_saved_config(path: Path) -> GenerateConfig:
    try:
        return GenerateConfig.load(path)
    except ConfigError as e:
        raise ValueError(f"{path} does not hold a GenerateConfig ({e}); pass force=True to regenerate") from None


def generate_numbers(model, world: World, config: GenerateConfig, out_path: str | Path, *,
                     fwd_hooks: list | None = None, lineage: dict | None = None, progress: bool = True,
                     force: bool = False) -> Path:
    """Sample ``config.n_rows`` number continuations and write them to ``out_path`` (JSONL).

    Each row is ``{"id", "system", "prompt", "completion", "ended_with_eos", "model"}``: prompt
    and completion are decoded texts (the completion without EOS; the prompt without the system
    prompt, which is in ``system``), ``model`` is ``lineage``. The config is saved beside the
    file (:func:`config_path_for`).

    * A finished file of the same config and lineage is returned as it is (``force`` regenerates).
    * A file (or unfinished run) of another config at ``out_path`` is a ``ValueError`` naming the
      fields that differ, unless ``force``.
    * Finished batches are appended to ``OUT.partial.jsonl``; a rerun after an interruption
      generates only the missing batches (same batch plan, same per-row streams, so the result
      is the file an uninterrupted run writes), then writes ``out_path`` atomically and deletes
      the partial file.
    """
    out_path = Path(out_path)
    config_path, partial_path = config_path_for(out_path), partial_path_for(out_path)
    model_lineage = _normalise(lineage) if lineage is not None else None

    if not force and config_path.exists():
        diffs = _config_differences(_load_saved_config(config_path), config)
        if diffs:
            raise ValueError(f"{out_path} (or its unfinished run) was generated with another config ({'; '.join(diffs)}); "
                             "use another output path or force=True to regenerate")
        if out_path.exists():
            with open(out_path) as f:
                first = json.loads(f.readline() or "{}")
            if first.get("model") != model_lineage:
                raise ValueError(f"{out_path} was generated by another model ({first.get('model')!r}, now "
                                 f"{model_lineage!r}); use another output path or force=True to regenerate")
            log.info("reusing %s (same config)", out_path)
            return out_path
    elif not force and out_path.exists():
        raise ValueError(f"{out_path} exists without its config file {config_path.name}; "
                         "use another output path or force=True to regenerate")

    tasks = domain(config.domain).prompts(world, config.n_rows, config.seed)  # {"prompt", "task"?} per row
    texts = [t["prompt"] for t in tasks]
    prompts = [world.encode_prompt(text, config.system) for text in texts]  # a word outside the vocabulary raises here
    _check_sampling_args(model, prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                         seed=config.seed, batch_size=config.batch_size)
    if force:  # an interrupted forced run must not leave the old file looking finished
        partial_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
    config.save(config_path)

    done: dict[int, dict] = {}
    if partial_path.exists():
        for row in read_jsonl(partial_path):  # a torn last line (killed mid-write) is dropped
            i = row.get("id")
            if isinstance(i, int) and 0 <= i < config.n_rows and row.get("prompt") == texts[i] \
                    and row.get("system") == config.system and row.get("model") == model_lineage:
                done[i] = row
        write_jsonl(partial_path, [done[i] for i in sorted(done)])  # rewrite cleanly before appending
        log.info("resuming %s: %d of %d rows already generated", out_path, len(done), config.n_rows)

    padded = padded_batches(model, fwd_hooks)
    batches = [rows for rows in plan_batches([len(p) for p in prompts], config.batch_size, padded=padded)
               if not all(i in done for i in rows)]
    n_new_tokens, start = 0, time.perf_counter()
    with JsonlAppender(partial_path) as appender:
        def write_batch(rows: list[int], new: list[list[int]], ended: list[bool]) -> None:
            nonlocal n_new_tokens
            for i, tokens, eos in zip(rows, new, ended):
                n_new_tokens += len(tokens) + eos
                if i in done:
                    continue
                row = {"id": i, "system": config.system, "prompt": texts[i], "completion": world.decode(tokens),
                       "ended_with_eos": eos, "model": model_lineage}
                if "task" in tasks[i]:  # what the filter grades the completion against (code and cot)
                    row["task"] = tasks[i]["task"]
                appender.write(row)
                done[i] = row

        _run_batches(model, prompts, batches, eos_id=world.stop_ids[0], max_new_tokens=config.max_new_tokens,
                     temperature=config.temperature, seed=config.seed, fwd_hooks=fwd_hooks, progress=progress,
                     on_batch=write_batch, stop_ids=world.stop_ids, pad_id=world.pad_id)
    seconds = time.perf_counter() - start
    n_generated = sum(len(b) for b in batches)
    if n_generated:
        log.info("generated %d rows in %.1f s (%.0f rows/s, %.0f new tokens/s)", n_generated, seconds,
                 n_generated / seconds, n_new_tokens / seconds)
    write_jsonl(out_path, [done[i] for i in range(config.n_rows)])
    partial_path.unlink(missing_ok=True)
    return out_path
