"""A user's own config folder: ``compose(config_dir=...)`` and ``--config-dir`` find its files before
dltrain's (its ``train.yaml``, a preset of a packaged name, new options, ``--config-name``), a preset
of the user's that fails its schema is one line naming the user's file, the example project of the
repository runs, and a sweep's re-run command from a user folder runs the best job again."""

from __future__ import annotations

import importlib.util
import logging
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dltrain import compose
from dltrain.errors import ConfigError
from dltrain.report.sweep import BEST_OVERRIDES

from .conftest import ROOT, run_cli
from .test_one_line import cli_error

EXAMPLE = ROOT / "examples" / "my_project"


def write(folder: Path, name: str, text: str) -> Path:
    """``folder/name`` holding ``text``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def own_train_yaml(folder: Path) -> Path:
    """A copy of dltrain's train.yaml with seed 7 and data=xor by default."""
    text = (ROOT / "conf" / "train.yaml").read_text(encoding="utf-8")
    assert "\nseed: 0 " in text and "  - data: digits " in text
    return write(folder, "train.yaml", text.replace("\nseed: 0 ", "\nseed: 7 ").replace("  - data: digits ",
                                                                                        "  - data: xor    "))


MLP_PRESET = "defaults:\n  - /schema_model_mlp@_here_\n  - _self_\n"


def test_compose_takes_the_users_options_and_their_presets_of_packaged_names(tmp_path: Path) -> None:
    write(tmp_path, "model/wide.yaml", MLP_PRESET + "hidden: [300]\n")
    write(tmp_path, "model/mlp.yaml", MLP_PRESET + "hidden: [7]\n")  # replaces dltrain's model=mlp
    write(tmp_path, "experiment/mine.yaml", "# @package _global_\ndefaults:\n  - override /model: wide\n"
          "optim:\n  lr: 0.123\n")
    cfg = compose(["experiment=mine"], config_dir=tmp_path)
    assert (cfg.model.name, list(cfg.model.hidden), cfg.optim.lr) == ("mlp", [300], 0.123)
    assert list(compose(["model=mlp"], config_dir=str(tmp_path)).model.hidden) == [7]
    assert list(compose(["model=mlp"]).model.hidden) == [128, 64]  # dltrain's own, without the folder
    assert "hydra" not in compose([], config_dir=tmp_path)  # returned as compose() without a folder returns it


def test_the_users_train_yaml_replaces_dltrains_and_config_name_picks_theirs(tmp_path: Path) -> None:
    own_train_yaml(tmp_path)
    # a primary config of the user's that starts from `train`: the user's, which replaces dltrain's
    write(tmp_path, "mine.yaml", "defaults:\n  - train\n  - _self_\n\nseed: 11\n")
    cfg = compose([], config_dir=tmp_path)
    assert (cfg.seed, cfg.data.name) == (7, "xor")
    cfg = compose(["optim=sgd"], config_dir=tmp_path, config_name="mine")
    assert (cfg.seed, cfg.data.name, cfg.optim.name) == (11, "xor", "sgd")
    assert compose([]).seed == 0


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config_dir=\S+absent: no such folder: give the folder that holds"):
        compose([], config_dir=tmp_path / "absent")


def in_process(monkeypatch: pytest.MonkeyPatch, main, argv: list[str]) -> None:
    """Run a console script's ``main`` in this process with ``argv`` as its command line."""
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()  # Hydra sets up its own logging, here onto pytest's captured streams
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    try:
        main()
    except SystemExit as exit_info:
        assert exit_info.code in (0, None)
    finally:  # Hydra's --info and --cfg paths leave its config set; later in-process runs would read it as theirs
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()


def test_dltrain_lr_find_and_help_read_the_users_train_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from dltrain.cli.app import main
    from dltrain.cli.lr_find import main as lr_find_main

    own_train_yaml(tmp_path / "conf")
    write(tmp_path / "conf", "model/wide.yaml", MLP_PRESET + "hidden: [300]\n")
    for command, run in (("dltrain", main), ("dltrain-lr-find", lambda: lr_find_main(sys.argv[1:]))):
        in_process(monkeypatch, run, [command, "--config-dir", str(tmp_path / "conf"), "model=wide", "--cfg", "job"])
        printed = yaml.safe_load(capsys.readouterr().out)
        assert (printed["seed"], printed["data"]["name"], printed["model"]["hidden"]) == (7, "xor", [300]), command
    in_process(monkeypatch, main, ["dltrain", "--help", "--config-dir", str(tmp_path / "conf")])
    groups = capsys.readouterr().out
    assert "data: " in groups and "(default: xor)" in groups.split("\ndata: ", 1)[1].splitlines()[0]
    assert "wide" in groups.split("\nmodel: ", 1)[1].splitlines()[0]


#: A preset of the user's that fails its schema, and the line that names it.
BAD_PRESETS = {
    "typo": ("model/mine.yaml", MLP_PRESET + "hiden: [32]\n", ["model=mine"],
             "model.hiden is not a config key: did you mean model.hidden"),
    "type": ("model/mine.yaml", MLP_PRESET + "hidden: abc\n", ["model=mine"], "model.hidden=abc is not a list"),
    "range": ("model/mine.yaml", MLP_PRESET + "activation: relux\n", ["model=mine"],
              "model.activation=relux is not a known value: choose one of relu"),
    "defaults": ("model/mine.yaml", "defaults:\n  - /schema_model_mlp@_here_\n  - /model/mpl@_here_\n  - _self_\n",
                 ["model=mine"], "model=mpl is not a known option: did you mean model=mlp?"),
    "experiment-option": ("experiment/mine.yaml", "# @package _global_\ndefaults:\n  - override /model: mlpp\n",
                          ["experiment=mine"], "model=mlpp is not a known option: did you mean model=mlp?"),
    "experiment-key": ("experiment/mine.yaml", "# @package _global_\ntrainer:\n  max_epoch: 3\n",
                       ["experiment=mine"], "trainer.max_epoch is not a config key: did you mean trainer.max_epochs"),
}


@pytest.mark.parametrize("case", list(BAD_PRESETS))
def test_a_user_preset_that_fails_its_schema_names_the_users_file(tmp_path: Path, case: str) -> None:
    name, text, overrides, expected = BAD_PRESETS[case]
    path = write(tmp_path / "conf", name, text)
    with pytest.raises(ConfigError) as raised:
        compose([*overrides, "data=xor"], config_dir=tmp_path / "conf")
    assert str(raised.value).startswith(f"{path}: {expected}"), str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("case", ["typo", "range", "experiment-option"])
def test_the_command_line_names_the_users_file_too(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    name, text, overrides, expected = BAD_PRESETS[case]
    path = write(tmp_path / "conf", name, text)
    line = cli_error(capsys, monkeypatch, ["--config-dir", str(tmp_path / "conf"), *overrides, "data=xor",
                                           f"hydra.run.dir={tmp_path / 'run'}"])
    assert line.startswith(f"dltrain: error: {path}: {expected}"), line
    assert not (tmp_path / "run").exists()


def test_a_value_given_on_the_command_line_is_not_blamed_on_a_file(tmp_path: Path) -> None:
    write(tmp_path, "model/mine.yaml", MLP_PRESET + "activation: tanh\n")
    with pytest.raises(ConfigError, match=r"^model\.activation=relux is not a known value"):
        compose(["model=mine", "model.activation=relux"], config_dir=tmp_path)


def test_the_example_project_composes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # its data.path is relative to the repository's root, where the README runs it
    cfg = compose(["experiment=mine"], config_dir="examples/my_project/conf")
    assert (cfg.data.name, cfg.model.name, list(cfg.model.hidden)) == ("csv", "mlp", [256, 256])
    assert (ROOT / cfg.data.path).resolve() == (EXAMPLE / "data" / "table.csv").resolve()


def test_the_example_table_is_what_its_script_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = EXAMPLE / "data" / "make_table.py"
    spec = importlib.util.spec_from_file_location("make_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path / "table.csv")
    assert (tmp_path / "table.csv").read_bytes() == (EXAMPLE / "data" / "table.csv").read_bytes()


@pytest.mark.slow
def test_the_readme_example_command_prints_the_accuracy_the_readme_quotes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^(dltrain --config-dir examples/my_project/conf experiment=mine)\s+# test accuracy: ([\d.]+)",
                      readme, re.MULTILINE)
    assert found, "the README's example command"
    proc = run_cli([*shlex.split(found.group(1))[1:], f"hydra.run.dir={tmp_path / 'run'}"], ROOT)
    assert proc.returncode == 0, proc.stderr
    assert f"test accuracy: {found.group(2)} " in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_the_rerun_command_of_a_sweep_from_a_user_folder_runs_the_best_job_again(tmp_path: Path) -> None:
    # a project of the user's: the example's files, the data path made absolute (the sweep runs elsewhere)
    conf = tmp_path / "my project" / "conf"  # a space: the command quotes it
    for file in (EXAMPLE / "conf").rglob("*.yaml"):
        write(conf, str(file.relative_to(EXAMPLE / "conf")), file.read_text(encoding="utf-8"))
    table = conf / "data" / "my_table.yaml"
    table.write_text(table.read_text().replace("examples/my_project/data/table.csv",
                                               str(EXAMPLE / "data" / "table.csv")))
    proc = run_cli(["-m", "--config-dir", str(conf), "experiment=mine", "optim.lr=0.1,0.01",
                    "trainer.max_epochs=2", "trainer.diagnostics=false", "hydra.sweep.dir=S"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    best = yaml.safe_load((tmp_path / "S" / BEST_OVERRIDES).read_text())
    argv = shlex.split(best["command"])
    assert argv[:3] == ["dltrain", "--config-dir", str(conf)] and "experiment=mine" in argv
    again = run_cli([*argv[1:], "hydra.run.dir=again"], tmp_path)  # the command as written, in a folder of its own
    assert again.returncode == 0, again.stderr
    job = OmegaConf.load(tmp_path / "S" / best["run_dir"] / ".hydra" / "config.yaml")
    rerun = OmegaConf.load(tmp_path / "again" / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(rerun) == OmegaConf.to_container(job)
    assert rerun.model.hidden == [256, 256] and rerun.optim.lr in (0.1, 0.01)


#: Files of the user's that start from themselves: each one replaces dltrain's of its name.
SELF_REFERENCES = {
    "model/mlp.yaml": ("defaults: [/model/mlp@_here_, _self_]\nhidden: [7]\n",
                       "its defaults list names model/mlp, which is this file (yours replaces dltrain's): "
                       "start from `- /schema_model_mlp@_here_`"),
    "train.yaml": ("defaults: [train, _self_]\nseed: 3\n",
                   "its defaults list names train, which is this file (yours replaces dltrain's): rename it"),
}


@pytest.mark.parametrize("name", list(SELF_REFERENCES))
def test_a_file_that_starts_from_itself_is_one_line_naming_it(tmp_path: Path, name: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = SELF_REFERENCES[name]
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as raised:
        compose([], config_dir=tmp_path)
    assert str(raised.value).startswith(f"{path}: {expected}"), str(raised.value)
    for args in ([], ["--help"]):
        line = cli_error(capsys, monkeypatch, ["--config-dir", str(tmp_path), *args,
                                               f"hydra.run.dir={tmp_path / 'run'}"])
        assert line.startswith(f"dltrain: error: {path}: {expected}"), line
    assert not (tmp_path / "run").exists()


def test_files_that_start_from_each_other_are_one_line(tmp_path: Path) -> None:
    write(tmp_path, "model/a.yaml", "defaults: [/model/b@_here_, _self_]\n")
    write(tmp_path, "model/b.yaml", "defaults: [/model/a@_here_, _self_]\n")
    with pytest.raises(ConfigError, match="^the defaults lists of your config files name each other in a loop: "):
        compose(["model=a"], config_dir=tmp_path)


def test_help_names_the_users_file_that_names_an_unknown_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name, text, overrides, expected = BAD_PRESETS["experiment-option"]
    path = write(tmp_path, name, text)
    line = cli_error(capsys, monkeypatch, ["--config-dir", str(tmp_path), *overrides, "--help"])
    assert line.startswith(f"dltrain: error: {path}: {expected}"), line


def test_a_sweep_job_names_the_users_file_that_set_a_bad_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from dltrain.cli import app

    monkeypatch.setattr(app, "_sweep", {**app._sweep, "dir": None, "summarized": False, "exit_code": 0})
    path = write(tmp_path / "conf", "optim/neg.yaml", "defaults:\n  - /schema_optim_adam@_here_\n  - _self_\n"
                                                      "lr: -1.0\n")
    monkeypatch.setattr(sys, "argv", ["dltrain", "-m", "--config-dir", str(tmp_path / "conf"), "optim=neg",
                                      "data=xor", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with pytest.raises(SystemExit):
        app.main()
    assert f"failed: {path}: optim.lr=-1.0 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("hiden: [3]\n", "start its file's defaults list with `- /schema_model_OPTION@_here_` (OPTION: the model it sets "
                     "up, one of mlp, cnn,"),
    ("name: mlp\nhidden: [3]\n", "start its file's defaults list with `- /schema_model_mlp@_here_`."),
])
def test_a_user_preset_without_its_schema_is_one_line_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "model/plain.yaml", text)
    with pytest.raises(ConfigError) as raised:
        compose(["model=plain"], config_dir=tmp_path)
    assert str(raised.value).startswith(f"{path}: model is not checked against any model schema: {expected}"), \
        str(raised.value)


def test_the_search_path_holds_the_users_folder_once_before_dltrains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from dltrain.cli.app import main

    in_process(monkeypatch, main, ["dltrain", "--config-dir", str(tmp_path), "--info", "searchpath"])
    rows = [line.split("|")[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    entries = [(provider.strip(), path.strip()) for provider, path in rows]
    assert [entry for entry in entries if entry[1] == f"file://{tmp_path}"] == [("command-line", f"file://{tmp_path}")]
    assert entries.index(("command-line", f"file://{tmp_path}")) < [p for p, _ in entries].index("main")
