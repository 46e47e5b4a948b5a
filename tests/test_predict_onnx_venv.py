"""The exported model is self-contained: in a fresh virtual environment holding only
onnxruntime, numpy, pandas and Pillow, with dltrain installed without its dependencies (no
torch), ``dltrain-predict ckpt=.../model.onnx`` gives the checkpoint's predictions for a table
with categorical columns, texts and digit images. Installs packages from the package index
(skipped, saying so, where it cannot be reached)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_predict_onnx import _checkpoint, _digit_pngs, _export, _new_rows, _predict, _same_predictions

pytestmark = pytest.mark.slow

#: What the environment holds besides dltrain (Pillow for image inputs).
PACKAGES = ("onnxruntime", "numpy", "pandas", "pillow")


def _environment(folder: Path) -> Path:
    """A new virtual environment with :data:`PACKAGES` from the package index and dltrain
    (``--no-deps``, a wheel built here from a copy of the sources with this environment's
    setuptools, which writes wheels itself, so that nothing is fetched for the build and nothing
    is built in the repository): its ``bin`` folder. Skips the test when the index cannot be reached."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building dltrain's wheel without the index needs setuptools in this environment")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "env")], check=True, timeout=120)
    pip = [str(folder / "env" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    fetched = subprocess.run([*pip, *PACKAGES], capture_output=True, text=True, timeout=600)
    if fetched.returncode != 0:
        last = (fetched.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the package index cannot be reached to install {', '.join(PACKAGES)} ({last})")
    source = folder / "dltrain-src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("dltrain", "conf"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = folder / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", "--no-index", *map(str, wheels.glob("dltrain-*.whl"))], check=True, timeout=600)
    return folder / "env" / "bin"


def test_predictions_without_torch(tmp_path_factory, data_files, tmp_path):
    bin_dir = _environment(tmp_path / "venv")  # first: a skip costs no training
    files = data_files.overrides
    models = {
        "csv": _export(tmp_path_factory, "csv", ["data=csv", *files["csv"], "data.target=Class",
                                                 "data.missing=mean", "data.max_categories=2"]),
        "text": _export(tmp_path_factory, "text", ["data=text_csv", *files["text_csv"], "model=gru"]),
        "digits": _export(tmp_path_factory, "digits", []),
    }
    inputs = {"csv": _new_rows(data_files, tmp_path / "new.csv"), "text": data_files.root / "texts.csv",
              "digits": _digit_pngs(tmp_path / "pngs")}
    no_torch = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    for name, model in models.items():
        out = tmp_path / f"{name}-onnx.csv"
        proc = subprocess.run([str(bin_dir / "dltrain-predict"), f"ckpt={model}", f"input={inputs[name]}",
                               f"output={out}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        theirs = _predict(_checkpoint(model), inputs[name], tmp_path / f"{name}-ckpt.csv")
        _same_predictions(pd.read_csv(out, keep_default_na=False), theirs)
