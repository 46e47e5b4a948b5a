"""Shared fixtures: configs composed exactly as the command line composes them, and small data files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.files import (
    patch_cifar10_checksums,
    patch_svhn_checksums,
    write_cifar10,
    write_image_folder,
    write_mnist,
    write_svhn,
    write_table_csv,
    write_text_csv,
)

ROOT = Path(__file__).resolve().parents[1]
#: Data option -> ``patch(monkeypatch, root)``: makes torchvision accept the generated files under ``root``
#: in place of the official ones, whose MD5 sums it checks.
CHECKSUMS: dict[str, Callable[[pytest.MonkeyPatch, Path], None]] = {"cifar10": patch_cifar10_checksums,
                                                                      "svhn": patch_svhn_checksums}


@pytest.fixture(autouse=True)
def no_report_pictures(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs draw no pictures (curves.png, confusion_matrix.png, roc_pr.png,
    regression.png, worst_predictions.png, samples.png, gradients.png), unless the test is
    marked ``@pytest.mark.pictures``.

    The pictures are tested where they are the point (the tests marked so); elsewhere drawing
    them only costs time: curves.png alone is most of a small run's, paid by some three hundred
    runs. The report's numbers (summary.json's report, worst_predictions.csv, diagnostics.csv)
    are still written by every run. Subprocess runs are not affected.
    """
    if request.node.get_closest_marker("pictures"):
        return
    from dltrain.report import run_end, run_report
    from dltrain.training import run

    monkeypatch.setattr(run_report, "_draw", lambda folder, name, draw: None)
    monkeypatch.setattr(run, "write_samples", lambda run_dir, data, augment, seed: None)
    monkeypatch.setattr(run_end, "draw_gradients", lambda run_dir: None)
    monkeypatch.setattr(run_end, "draw_curves", lambda rows, summary, run_dir: None)


@pytest.fixture(autouse=True)
def tracking_tools_kept_in(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B's cache, config and data folders (its debug logs, ``wandb/logs/core-debug-*.log``, go in
    the cache) in the session's temporary folder, and MLflow's usage telemetry off, for every
    test and the commands it runs: no test writes in the user's home or reaches for a server."""
    home = tmp_path_factory.getbasetemp() / "tracking_tools"
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return home


@pytest.fixture
def compose() -> Callable[..., object]:
    """``compose(overrides)``: the validated config for those command-line overrides."""
    from dltrain import compose as _compose

    return _compose


def run_cli(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dltrain ARGS`` in ``cwd`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "dltrain", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def tool_error(capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], None], tool: str,
               argv: list[str]) -> str:
    """Run a console script's ``main(argv)`` expecting a user error: the one line it prints
    (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tool}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@dataclass(frozen=True)
class DataFiles:
    """Small files for the data options that read files, under ``root``.

    Attributes:
        root: the folder holding them (``data.root`` of the torchvision datasets).
        overrides: data option -> the command-line overrides that point it at its files.
    """

    root: Path
    overrides: dict[str, list[str]]


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    """Tiny files, written once per session, for every data option that needs files:
    MNIST and Fashion-MNIST (60 + 20 images), CIFAR-10 and SVHN (50 + 10 each), a 60-row table whose target
    column is ``Class`` (string labels, a text column, 3 empty cells in two columns), 60 texts
    and an image folder of 3 x 13 images with a corrupt one and stray files."""
    root = tmp_path_factory.mktemp("data_files")
    write_mnist(root, n_train=60, n_test=20)
    write_mnist(root, folder="FashionMNIST", n_train=60, n_test=20)
    write_cifar10(root, n_per_batch=10, n_test=10)
    write_svhn(root, n_train=50, n_test=10)
    local = [f"data.root={root}", "data.download=false"]
    table = write_table_csv(root / "table.csv", rows=60, target="Class", missing=3)
    texts = write_text_csv(root / "texts.csv", rows=60)
    images = write_image_folder(root / "images", per_class=13)
    return DataFiles(root, {"mnist": local, "fashion_mnist": local, "cifar10": local, "svhn": local,
                            "csv": [f"data.path={table}"], "text_csv": [f"data.path={texts}"],
                            "image_folder": [f"data.path={images}"]})


@pytest.fixture
def data_overrides(data_files: DataFiles, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """``data_overrides(option)``: the overrides that point ``data=option`` at :func:`data_files`'
    files (none for generated data). For the options in :data:`CHECKSUMS` it also points
    torchvision's MD5 sums at the generated files, for this test only."""

    def overrides(option: str) -> list[str]:
        if option in CHECKSUMS:
            CHECKSUMS[option](monkeypatch, data_files.root)
        return list(data_files.overrides.get(option, []))

    return overrides


@contextmanager
def logging_restored() -> Iterator[None]:
    """Hydra points the root logger at the run's log file: put back the handlers there were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache (``TORCH_HOME``), and any download refused: the test fails if one is tried."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"a download was tried: {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"



@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, data_files: DataFiles) -> dict[str, tuple[Path, str]]:
    """Short runs exported to ONNX once per session, shared by the export and predict tests: name
    -> (its ``model.onnx``, what ``dltrain-export`` printed). ``digits``: the MLP; ``csv``: a table
    whose city column keeps one category (the others share the infrequent column), 3 gaps filled
    under ``data.missing=mean``."""
    import contextlib
    import io

    from dltrain import compose, train
    from dltrain.export.cli import export_checkpoint

    table = ["data=csv", *data_files.overrides["csv"], "data.target=Class", "data.missing=mean",
             "data.max_categories=2"]
    done = {}
    for name, overrides in {"digits": [], "csv": table}.items():
        run = tmp_path_factory.mktemp(f"exported-{name}") / "run"
        train(compose(["device=cpu", "trainer.fast_dev_run=true", *overrides]), run_dir=run)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            folder = export_checkpoint(run / "checkpoints" / "best.pt", "onnx", batch_size=50)
        done[name] = folder / "model.onnx", printed.getvalue()
    return done
