"""dltrain-eval: a checkpoint rebuilt from itself reproduces its run's test metrics; bad
checkpoints and arguments end in one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from dltrain import compose, train
from dltrain.inference.evaluate import main
from dltrain.inference.restore import load_model, run_tool
from tests.conftest import ROOT, tool_error


def _train(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    run = tmp_path_factory.mktemp(name) / "run"
    train(compose(["device=cpu", *overrides]), run_dir=run)
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return _train(tmp_path_factory, "digits", ["trainer.max_epochs=2"])


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, data_files):
    return _train(tmp_path_factory, "csv", ["data=csv", *data_files.overrides["csv"], "data.target=Class",
                                            "data.missing=mean", "trainer.max_epochs=2"])


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _fails(capsys, argv: list[str]) -> str:
    return tool_error(capsys, main, "dltrain-eval", argv)


def test_best_checkpoint_reproduces_the_runs_test_metrics(digits_run, capsys):
    main([f"ckpt={digits_run / 'checkpoints' / 'best.pt'}", "device=cpu"])
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out
    result = json.loads((digits_run / "checkpoints" / "eval.json").read_text())
    summary = _summary(digits_run)
    assert result["metrics"] == pytest.approx(summary["test"], rel=1e-6)
    assert result["split"] == "test" and result["num_examples"] == summary["data"]["num_test"] == 360
    assert result["epoch"] == summary["best_epoch"]
    matrix = torch.tensor(result["confusion_matrix"])
    assert result["class_names"] == [str(d) for d in range(10)] and matrix.shape == (10, 10)
    assert matrix.sum() == 360 and matrix.trace() / 360 == pytest.approx(summary["test"]["accuracy"])
    # rows are the true classes: each row holds that class's test examples (stratified: 35-37 each)
    assert all(35 <= n <= 37 for n in matrix.sum(dim=1).tolist())


def test_validation_split_gives_the_best_monitored_value(digits_run, capsys):
    main([f"ckpt={digits_run / 'checkpoints' / 'best.pt'}", "split=val", "device=cpu", "trainer.eval_batch_size=64"])
    result = json.loads((digits_run / "checkpoints" / "eval.json").read_text())
    assert result["split"] == "val" and result["num_examples"] == 180
    assert result["metrics"]["loss"] == pytest.approx(_summary(digits_run)["best_value"], rel=1e-5)


def test_binary_metrics_with_the_data_file_moved(csv_run, tmp_path, capsys):
    source = json.loads((csv_run / "data.json").read_text())["path"]
    moved = shutil.copy(source, tmp_path / "moved.csv")
    main([f"ckpt={csv_run / 'checkpoints' / 'best.pt'}", f"data.path={moved}", "device=cpu"])
    result = json.loads((csv_run / "checkpoints" / "eval.json").read_text())
    assert set(result["metrics"]) == {"loss", "accuracy", "precision", "recall", "f1"}
    assert result["metrics"] == pytest.approx(_summary(csv_run)["test"], rel=1e-6)
    assert result["class_names"] == ["ok", "fraud"] and result["overrides"] == {"data.path": str(moved)}
    # Another table behind data.path is not what the model was trained on.
    pd.read_csv(source).assign(extra=1.0).to_csv(tmp_path / "wider.csv", index=False)
    err = _fails(capsys, [f"ckpt={csv_run / 'checkpoints' / 'best.pt'}", f"data.path={tmp_path / 'wider.csv'}"])
    assert "not what" in err and "input shape: (6,) when trained, (7,) now" in err


@pytest.mark.parametrize("target", ["tests.nets.TinyNet", "tests.nets.lazy_net"])
def test_custom_models_with_log_softmax_are_rebuilt(tmp_path, target, capsys):
    """A custom module (forward hook) and a lazy nn.Sequential (last layer) trained with loss=nll."""
    run = tmp_path / "run"
    summary = train(compose(["device=cpu", "trainer.fast_dev_run=true", "model=custom", f"model._target_={target}",
                             "loss=nll"]), run_dir=run)
    restored = load_model(run / "checkpoints" / "best.pt", target=target)  # the user names the code to run
    assert not restored.model.training and restored.cfg.model._target_ == target
    main([f"ckpt={run / 'checkpoints' / 'best.pt'}", "device=cpu", f"model._target_={target}"])
    result = json.loads((run / "checkpoints" / "eval.json").read_text())
    assert result["metrics"] == pytest.approx(summary["test"], rel=1e-6)


class _CreatesFile:
    """Unpickling this would create a file: what a malicious checkpoint does."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_checkpoint_errors_are_one_line(digits_run, tmp_path, capsys):
    best = digits_run / "checkpoints" / "best.pt"
    err = _fails(capsys, [f"ckpt={tmp_path / 'nope.pt'}"])
    assert "nope.pt does not exist" in err
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(best.read_bytes()[:2000])
    assert "truncated.pt cannot be loaded" in _fails(capsys, [f"ckpt={truncated}"])
    marker = tmp_path / "created-by-unpickling"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _CreatesFile(str(marker))}, evil)
    assert "refused" in _fails(capsys, [f"ckpt={evil}"]) and not marker.exists()
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "weights.pt")
    err = _fails(capsys, [f"ckpt={tmp_path / 'weights.pt'}"])
    assert "weights.pt has no config, model_spec, data" in err
    state = torch.load(best, weights_only=True)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, tmp_path / "edited.pt")
    assert "do not fit the model its config describes (missing " in _fails(capsys, [f"ckpt={tmp_path / 'edited.pt'}"])


@pytest.mark.parametrize("args,expected", [
    (["split=val", "colour=red"],
     "unknown key colour: dltrain-eval takes ckpt, split, device, model._target_, trust_code, data.path, data.root"),
    (["trainer.max_epochs=3"], "trainer.max_epochs cannot be changed here"),
    (["data.wrong_key=3"], "data.wrong_key cannot be changed here: only where the data lives (data.path"),
    (["data.val_fraction=0.5"], "data.val_fraction cannot be changed here"),  # would move examples into test
    (["data.path=elsewhere.csv"], "data.path is not a key of this checkpoint's data=digits config"),
    (["split=train"], "split=train is not a choice: use test or val"),
    (["device=tpu"], "device=tpu is not valid"),
    (["best.pt"], "argument 'best.pt' is not key=value"),
])
def test_argument_errors_are_one_line(digits_run, capsys, args, expected):
    ckpt = [] if args == ["best.pt"] else [f"ckpt={digits_run / 'checkpoints' / 'best.pt'}"]
    assert expected in _fails(capsys, [*ckpt, *args])


def test_required_key_and_help(capsys):
    assert "ckpt=... is required" in _fails(capsys, ["split=val"])
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dltrain-eval ckpt=... [split=test] [device=auto]")
    assert all(key in out for key in ("ckpt", "split", "device", "data.path", "trainer.eval_batch_size", "example:"))


def test_error_boundary(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_tool("tool", interrupted)
    assert exit_info.value.code == 130 and capsys.readouterr().err == "tool: interrupted\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_tool("tool", lambda: 1 / 0)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit):
        main(["ckpt=/no/such/file.pt"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("dltrain-eval: error: checkpoint /no/such")


@pytest.mark.slow  # a process start of its own: kept out of the default suite
def test_python_dash_m(digits_run):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    ckpt = digits_run / "checkpoints" / "last.pt"
    done = subprocess.run([sys.executable, "-m", "dltrain.inference.evaluate", f"ckpt={ckpt}",
                           "device=cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "confusion matrix" in done.stdout
    assert json.loads((digits_run / "checkpoints" / "eval.json").read_text())["checkpoint"].endswith("last.pt")
