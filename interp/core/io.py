"""File helpers: every artifact is written atomically (temp file + rename), so a killed run never
leaves a half-written checkpoint, JSONL or report that could be taken for a finished one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-d torch tensor
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~current_umask())  # mkstemp makes it private; the final file gets the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig(path)`` through a temporary file, so a killed run never leaves a truncated
    image under the final name. The format comes from ``path``'s suffix (the temporary file's
    own suffix is ``.tmp``, which matplotlib would not recognise)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies inputs: a base's weights, a data file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys), e.g. of a list of data rows."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write all rows atomically; returns the number of rows."""
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row, default=_json_default) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
    return n


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of JSON objects. A torn last line (from a killed appender: no newline
    after it) is ignored; any other bad line (not UTF-8, not JSON, not an object, a number of
    over 4,300 digits, nesting too deep for the parser) is a one-line ``ValueError`` naming the
    file and line."""
    rows = []
    lines = Path(path).read_bytes().split(b"\n")
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if i == len(lines) - 1:  # last line had no newline: an interrupted append
                break
            what = ("not UTF-8 text" if isinstance(e, UnicodeDecodeError) else
                    "nested too deeply" if isinstance(e, RecursionError) else "malformed JSON line")
            raise ValueError(f"{path}:{i + 1}: {what} ({' '.join(str(e).split())[:200]})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


class JsonlAppender:
    """Append rows to a JSONL log, flushing each one: a resumed run reads back what was written.

    A killed process can leave a torn last line, so an appender's file is never a finished
    artifact: stages append to a hidden or ``.partial`` path and move the file into place (or
    rewrite it with :func:`write_jsonl`) only when the stage has finished."""

    def __init__(self, path: str | Path, *, truncate: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w" if truncate else "a")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, default=_json_default) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


def load_safetensors(path: str | Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise ValueError(f"{path}: corrupt or unreadable safetensors file ({e})") from None


STAGING_SUFFIX = ".partial"


@contextlib.contextmanager
def staged_directory(final: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling directory that is renamed onto ``final`` when the block succeeds, so
    that ``final`` appears complete or not at all (it gets the usual mode, not mkdtemp's private one).

    ``replace=True`` (one writer, e.g. a checkpoint): staging directories a killed writer of
    ``final`` left are removed first and an existing ``final`` is replaced. ``replace=False``
    (writers that may race, e.g. the shared world tokenizer): nothing is removed, and if another
    writer's ``final`` appeared first it is kept and this one is dropped."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        stale = re.compile(re.escape(f".{final.name}.") + r"[A-Za-z0-9_]{8}" + re.escape(STAGING_SUFFIX))
        for path in final.parent.iterdir():
            if path.is_dir() and stale.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=STAGING_SUFFIX, dir=final.parent))
    tmp.chmod(0o777 & ~current_umask())
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            tmp.rename(final)
        except OSError:
            if replace:
                raise  # another writer of a single-writer directory: a real error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
