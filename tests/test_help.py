"""``dltrain --help``: every option of every group, the composed config, every file a run and a
sweep write, in Hydra's help conventions. (That it imports no torch: test_cli.py.)"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import OmegaConf

from dltrain import compose, train
from dltrain.cli.app import main
from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME
from dltrain.data import DATASETS
from dltrain.files import hydra_file_names
from dltrain.init import INITS
from dltrain.loggers import LOGGERS
from dltrain.losses import LOSSES
from dltrain.models import MODELS
from dltrain.optim import OPTIMIZERS
from dltrain.report import sweep
from dltrain.report.run_files import RUN_FILES, SWEEP_FILES, name_pattern
from dltrain.report.sweep_progress import SWEEP_LOG
from dltrain.schedulers import SCHEDULERS
from dltrain.tasks import TASKS

from .conftest import ROOT

REGISTRIES = {"model": MODELS, "data": DATASETS, "optim": OPTIMIZERS, "loss": LOSSES, "init": INITS,
              "scheduler": SCHEDULERS, "logger": LOGGERS, "task": TASKS}
#: Groups of ready-made presets with no builder behind them: their options are the YAML files.
PRESET_GROUPS = ("experiment", "debug", "hparams_search", "cluster")


def help_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What ``dltrain ARGS`` prints, run in this process."""
    monkeypatch.setattr(sys, "argv", ["dltrain", *args])
    try:
        main()
    except SystemExit as exit_info:  # Hydra's help ends the process; a success all the same
        assert exit_info.code in (0, None)
    return capsys.readouterr().out


def section(text: str, title: str) -> str:
    """The lines under the ``== title ...`` heading of the help, up to the blank line that ends them."""
    found = re.search(rf"^== {re.escape(title)}[^\n]*==\n(.*?\n)\n", text, re.S | re.M)
    assert found, f"no '== {title}' section in:\n{text}"
    return found.group(1)


def test_every_registered_option_of_every_group_and_its_default(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "--help")
    groups = section(text, "Config groups")
    cfg = compose()
    for group, registry in REGISTRIES.items():
        default = cfg[group].name if "name" in cfg[group] else ",".join(cfg[group])  # logger: {csv: {}}
        assert f"\n{group}: {', '.join(registry.names())}  (default: {default})\n" in "\n" + groups
    for group in PRESET_GROUPS:
        presets = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert f"\n{group}: {', '.join(presets)}  (none by default)\n" in "\n" + groups
    listed = {line.split(":")[0] for line in groups.splitlines() if line}
    assert listed == set(REGISTRIES) | set(PRESET_GROUPS)  # nothing of Hydra's own (hydra/...)


def test_usage_in_hydras_conventions(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "-h")
    usage = text.split("Examples:")[0]
    for usage_line in ("dltrain [group=option ...] [key=value ...]", "dltrain -m key=a,b", "--help",
                       "--cfg job", "--config-dir DIR [--config-name NAME]", "dltrain --hydra-help",
                       "HYDRA_FULL_ERROR=1 dltrain"):
        assert usage_line in usage
    assert text.rstrip().endswith("Use --hydra-help for Hydra's own options (launchers, sweepers, --info, "
                                  "shell completion).")


def test_config_shown_is_the_one_the_overrides_compose(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "model=cnn", "optim.lr=0.5", "--help")
    assert f"\nmodel: {', '.join(MODELS.names())}  (chosen: cnn)\n" in section(text, "Config groups")
    shown = yaml.safe_load(section(text, "Config (override with key=value)"))
    assert shown == OmegaConf.to_container(compose(["model=cnn", "optim.lr=0.5"]))


def test_options_and_config_of_a_config_dir(monkeypatch, capsys, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide.yaml").write_text("defaults:\n  - mlp\n  - _self_\nhidden: [512]\n")
    (tmp_path / "mine.yaml").write_text(f"defaults:\n  - {CONFIG_NAME}\n  - _self_\nseed: 7\n")
    text = help_text(monkeypatch, capsys, "--config-dir", str(tmp_path), "--config-name", "mine", "model=wide",
                     "--help")
    models = ", ".join(sorted([*MODELS.names(), "wide"]))
    assert f"\nmodel: {models}  (chosen: wide)\n" in section(text, "Config groups")
    shown = yaml.safe_load(section(text, "Config (override with key=value)"))
    assert shown["seed"] == 7 and shown["model"]["hidden"] == [512]


def test_options_of_a_config_path_tree_include_its_own_presets(monkeypatch, capsys, tmp_path):
    tree = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", tree)
    (tree / "optim" / "sgd_fast.yaml").write_text("defaults:\n  - sgd\n  - _self_\nlr: 0.5\n")
    text = help_text(monkeypatch, capsys, "--config-path", str(tree), "optim=sgd_fast", "--help")
    line = next(line for line in section(text, "Config groups").splitlines() if line.startswith("optim:"))
    assert line == f"optim: {', '.join(sorted([*OPTIMIZERS.names(), 'sgd_fast']))}  (chosen: sgd_fast)"


def test_a_missing_config_dir_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["dltrain", "--config-dir", str(tmp_path / "absent"), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"dltrain: error: --config-dir {tmp_path / 'absent'}: no such folder")


def test_help_into_a_closed_pipe_ends_quietly(monkeypatch):
    """``dltrain --help | head -1``: the reader leaves before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "argv", ["dltrain", "--help"])
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        try:
            main()
        except SystemExit as exit_info:
            assert exit_info.code in (0, None)


def run_files(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def covering(path: str) -> list[str]:
    """The names of :data:`RUN_FILES` that stand for ``path``: itself, or a folder above it."""
    return [entry.name for entry in RUN_FILES
            if name_pattern(entry.name).fullmatch(path) or (entry.name.endswith("/") and any(
                name_pattern(entry.name).fullmatch(parent.as_posix()) for parent in Path(path).parents))]


@pytest.mark.pictures
def test_every_file_a_run_writes_is_listed(monkeypatch, capsys, tmp_path):
    """The list ``--help`` shows is the one a real run directory holds, curves.png included."""
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    cfg = compose(["trainer.fast_dev_run=true", "device=cpu", "trainer.checkpoint.every_n_epochs=1",
                   f"logger={'tensorboard' if tensorboard else 'csv'}"])
    train(cfg, run_dir=tmp_path / "run")
    capsys.readouterr()  # the run's own output
    written = run_files(tmp_path / "run")
    assert "curves.png" in written
    for path in written:  # a folder of files stands for itself ("checkpoints" for what is in it)
        assert covering(path) or any(entry.name.startswith(path + "/") for entry in RUN_FILES), path
    this_run = ("", "trainer.checkpoint.save_last", "trainer.checkpoint.save_best",
                "trainer.checkpoint.every_n_epochs=N", "logger=tensorboard" if tensorboard else "")
    for entry in RUN_FILES:
        if entry.when in this_run:
            assert any(entry.name in covering(path) for path in written), entry.name

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):  # what Hydra adds
        hydra = hydra_compose(config_name=CONFIG_NAME, return_hydra_config=True).hydra
    by_command = {entry.name.rstrip("/") for entry in RUN_FILES if entry.when == "by the dltrain command"}
    assert by_command == set(hydra_file_names(hydra))
    assert name_pattern("rank<k>.log").fullmatch("rank3.log")

    text = help_text(monkeypatch, capsys, "--help")
    for title, entries in (("Files a run writes", RUN_FILES), ("Files a sweep writes", SWEEP_FILES)):
        shown = [line.split()[0] for line in section(text, title).splitlines() if line]
        assert shown == [entry.name for entry in entries]


def test_every_file_a_sweep_writes_is_listed():
    names = {entry.name for entry in SWEEP_FILES}
    assert {sweep.SUMMARY_CSV, sweep.SUMMARY_JSON, sweep.BEST_OVERRIDES, sweep.SWEEP_PLOT, SWEEP_LOG,
            "multirun.yaml"} < names
    assert name_pattern("<job>/").fullmatch("12")


def test_readme_lists_every_file_a_run_writes():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("Each run writes `outputs/<date>/<time>/`:")[1].split("\n\n")[1]
    in_backticks = set(re.findall(r"`([^`]+)`", table))
    for entry in RUN_FILES:
        assert entry.name in in_backticks or entry.name.split("/")[-1] in in_backticks, entry.name
