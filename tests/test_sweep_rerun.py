"""The re-run command of a sweep's best job (``best_overrides.yaml`` and the printed line)
names the config directory and config name the sweep was started with."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from dltrain.report.rerun import config_source
from dltrain.report.sweep import BEST_OVERRIDES, summarize_sweep

from .conftest import ROOT, run_cli

#: ``hydra.runtime.config_sources`` as Hydra writes them into a job's hydra.yaml.
OWN_SOURCES = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": "dltrain.conf", "schema": "pkg", "provider": "main"},
               {"path": "", "schema": "structured", "provider": "schema"}]


def write_job(sweep_dir: Path, num: int, overrides: list[str], best: float, config_name: str = "train",
              config_dir: str | None = None) -> None:
    """A finished job of a sweep, its hydra.yaml laid out as Hydra writes it."""
    sources = list(OWN_SOURCES)
    if config_dir is not None:
        sources.insert(2, {"path": config_dir, "schema": "file", "provider": "command-line"})
    hydra = {"hydra": {"job": {"num": num, "name": "dltrain", "config_name": config_name},
                       "runtime": {"output_dir": str(sweep_dir / str(num)), "config_sources": sources}}}
    job_dir = sweep_dir / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "epochs_run": 2, "best_epoch": 2, "monitor": "val_loss", "mode": "min",
        "best_value": best, "test": {}}))


def summarized(sweep_dir: Path) -> tuple[dict[str, Any], str]:
    """The sweep's best_overrides.yaml and what the summary printed."""
    console = Console(file=io.StringIO(), width=300)
    summarize_sweep(sweep_dir, console)
    return yaml.safe_load((sweep_dir / BEST_OVERRIDES).read_text()), console.file.getvalue()


def test_the_rerun_command_names_the_config_dir_and_config_name(tmp_path: Path) -> None:
    confs = str(tmp_path / "my confs")  # a space: the command quotes it
    write_job(tmp_path / "S", 0, ["optim=adam"], 0.7, "mine", confs)
    write_job(tmp_path / "S", 1, ["optim=sgd"], 0.2, "mine", confs)
    best, printed = summarized(tmp_path / "S")
    assert shlex.split(best["command"]) == ["dltrain", "--config-dir", confs, "--config-name", "mine", "optim=sgd"]
    assert best["overrides"] == ["optim=sgd"]
    assert (tmp_path / "S" / BEST_OVERRIDES).read_text().splitlines()[0].endswith(best["command"])
    assert f"best: job 1 (val_loss=0.2): {best['command']}" in printed


def test_a_config_dir_alone_and_dltrains_own_config(tmp_path: Path) -> None:
    write_job(tmp_path / "A", 0, ["optim=sgd"], 0.2, config_dir="/confs")
    assert shlex.split(summarized(tmp_path / "A")[0]["command"]) == ["dltrain", "--config-dir", "/confs", "optim=sgd"]
    write_job(tmp_path / "B", 0, ["optim=sgd"], 0.2)
    assert summarized(tmp_path / "B")[0]["command"] == "dltrain optim=sgd"


@pytest.mark.parametrize("text", ["hydra: [1, 2]\n", "hydra:\n  runtime:\n    config_sources: 7\n", "- a\n",
                                  "hydra: {job: {config_name: [x]}, runtime: {config_sources: [{path: 3, "
                                  "schema: file, provider: command-line}]}}\n", "{{{\n"])
def test_an_odd_hydra_yaml_leaves_the_defaults(tmp_path: Path, text: str) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text(text)
    assert config_source(tmp_path) == (None, None)


@pytest.mark.slow
def test_the_rerun_command_of_a_real_sweep_composes_the_same_config(tmp_path: Path) -> None:
    confs = tmp_path / "my confs"
    confs.mkdir()
    train = (ROOT / "conf" / "train.yaml").read_text()
    assert "\nseed: 0 " in train
    (confs / "mine.yaml").write_text(train.replace("\nseed: 0 ", "\nseed: 4321 "))
    proc = run_cli(["-m", "--config-dir", str(confs), "--config-name", "mine", "optim=sgd", "data=xor",
                    "trainer.fast_dev_run=true", "hydra.sweep.dir=S"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    best = yaml.safe_load((tmp_path / "S" / BEST_OVERRIDES).read_text())
    argv = shlex.split(best["command"])
    assert argv[:5] == ["dltrain", "--config-dir", str(confs), "--config-name", "mine"]
    again = run_cli([*argv[1:], "--cfg", "job"], tmp_path)  # the command as printed, composed only
    assert again.returncode == 0, again.stderr
    assert "seed: 4321" in again.stdout and "name: sgd" in again.stdout

