"""Digit images: scikit-learn's bundled 8x8 digits (the default, no download) or real MNIST from
local files (the four IDX files, optionally gzipped, or a keras-style ``mnist.npz``).

Images are flattened to ``d_in`` pixels scaled to [0, 1]; labels are integers 0..9.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.studies.mnist.model import N_CLASSES

# IDX element type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# name stem -> accepted spellings of the four MNIST files (with or without .gz)
IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


InputRange = Literal["unit", "symmetric"]


def scale_pixels(x: Float[Tensor, "*shape"], input_range: InputRange) -> Float[Tensor, "*shape"]:
    """Map pixels in [0, 1] to the model's input range: ``unit`` keeps [0, 1], ``symmetric`` maps
    to [-1, 1] (``2x - 1``, i.e. torchvision's ``Normalize(0.5, 0.5)`` used by the official code)."""
    if input_range == "unit":
        return x
    if input_range == "symmetric":
        return 2 * x - 1
    raise ValueError(f"unknown input_range {input_range!r}; choose unit or symmetric")


@dataclass(frozen=True)
class DigitData:
    """A train/test split of flattened digit images."""

    x_train: Float[Tensor, "n_train d_in"]
    y_train: Int[Tensor, "n_train"]
    x_test: Float[Tensor, "n_test d_in"]
    y_test: Int[Tensor, "n_test"]
    source: str

    def in_range(self, input_range: InputRange) -> "DigitData":
        """The same images with pixels mapped to ``input_range`` (see :func:`scale_pixels`)."""
        return replace(self, x_train=scale_pixels(self.x_train, input_range),
                       x_test=scale_pixels(self.x_test, input_range))

    @property
    def d_in(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> dict[str, str | int]:
        return {"source": self.source, "n_train": len(self.x_train), "n_test": len(self.x_test), "d_in": self.d_in}


def load_digits_split(test_fraction: float = 0.2, split_seed: int = 0) -> DigitData:
    """scikit-learn's 1797 bundled 8x8 digits (pixels 0..16, scaled to [0, 1]), split once into
    train and test by a seeded, class-stratified shuffle."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=test_fraction, random_state=split_seed,
                                              stratify=digits.target)
    return _make(x_tr, y_tr, x_te, y_te, f"sklearn load_digits (8x8), test_fraction={test_fraction}, split_seed={split_seed}")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``) into an array of its shape."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes of data) but the file holds "
                         f"{len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))  # a writable copy


def _find_idx(directory: Path, key: str) -> Path:
    for stem in IDX_FILES[key]:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    options = ", ".join(f"{s}[.gz]" for s in IDX_FILES[key])
    raise FileNotFoundError(f"{directory}: no {key} IDX file (looked for {options})")


def load_mnist(path: str | Path) -> DigitData:
    """Real MNIST from ``path``: a directory with the four IDX files (optionally ``.gz``), or an
    ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` (images ``(n, 28, 28)`` or
    ``(n, 784)``). Integer pixels are divided by 255; float pixels must already lie in [0, 1]."""
    path = Path(path)
    if path.is_dir():
        files = {key: _find_idx(path, key) for key in IDX_FILES}
        arrays = {key: read_idx(f) for key, f in files.items()}
    elif path.is_file():
        files = {key: path for key in NPZ_KEYS}
        arrays = _read_npz(path)
    else:
        raise FileNotFoundError(f"{path}: no such MNIST directory or .npz file")
    xs = {k: _pixels(arrays[k], files[k]) for k in ("x_train", "x_test")}
    ys = {k: _labels(arrays[k], files[k]) for k in ("y_train", "y_test")}
    for split in ("train", "test"):
        if len(xs[f"x_{split}"]) != len(ys[f"y_{split}"]):
            raise ValueError(f"{files[f'x_{split}']}: {len(xs[f'x_{split}'])} {split} images but "
                             f"{files[f'y_{split}']} has {len(ys[f'y_{split}'])} labels")
    if xs["x_train"].shape[1] != xs["x_test"].shape[1]:
        raise ValueError(f"{path}: train images have {xs['x_train'].shape[1]} pixels, test images {xs['x_test'].shape[1]}")
    return _make(xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], f"MNIST-format files at {path}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, expected an .npz archive with {list(NPZ_KEYS)}")
    with npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{path}: NPZ lacks array(s) {missing} (it has {sorted(npz.files)})")
        try:
            return {k: npz[k] for k in NPZ_KEYS}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: corrupt .npz archive ({e})") from None


def _pixels(x: np.ndarray, source: Path) -> np.ndarray:
    if x.ndim not in (2, 3) or len(x) == 0:
        raise ValueError(f"{source}: expected images of shape (n, h, w) or (n, pixels), got {x.shape}")
    x = x.reshape(len(x), -1)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"{source}: float pixels must lie in [0, 1], found [{x.min():.3g}, {x.max():.3g}]")
    return x


def _labels(y: np.ndarray, source: Path) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: expected a 1-d integer label array, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
        raise ValueError(f"{source}: labels must be 0..{N_CLASSES - 1}, found {y.min()}..{y.max()}")
    return y


def _make(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, source: str) -> DigitData:
    return DigitData(torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(y_tr, dtype=torch.long),
                     torch.as_tensor(x_te, dtype=torch.float32), torch.as_tensor(y_te, dtype=torch.long), source)


def load_data(path: str | None, test_fraction: float = 0.2, split_seed: int = 0) -> DigitData:
    """Real MNIST when ``path`` is given, else the bundled 8x8 digits."""
    return load_mnist(path) if path else load_digits_split(test_fraction, split_seed)
