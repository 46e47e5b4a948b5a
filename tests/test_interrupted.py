"""A stop signal is no error: ``Interrupted`` is a ``BaseException``, so no ``except Exception``
that keeps a run going (a failing logger, a custom model's start-up check) swallows it, and
the run still ends as interrupted, with the signal's exit code and one line."""

from __future__ import annotations

import json
import signal

import pytest
from torch import nn

from dltrain import compose, train
from dltrain.inference.restore import run_tool
from dltrain.loggers import Logger
from dltrain.training.checkpoint import load_checkpoint
from dltrain.training.signals import Interrupted, StopRequest

from .test_run_end import run_dltrain

QUICK = ["data=xor", "model.hidden=[8]", "trainer.batch_size=32"]


def test_interrupted_is_a_base_exception_like_keyboard_interrupt():
    assert issubclass(Interrupted, BaseException) and not issubclass(Interrupted, Exception)


# --- a second signal while the logger writes ------------------------------------------------------------------------


class SignalledTwiceWhileWriting(Logger):
    """Ctrl-C twice while it writes epoch 2's record: the first asks for a stop after the
    current step, the second aborts at once."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.finished: dict | None = None

    def log_epoch(self, row: dict) -> None:
        self.epochs.append(row["epoch"])
        if row["epoch"] == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    def finish(self, summary: dict) -> None:
        self.finished = summary


def test_a_second_signal_while_the_logger_writes_stops_the_run(tmp_path, monkeypatch, caplog):
    import dltrain.training.run

    monkeypatch.setattr(StopRequest, "repeat_window", 0.0)  # a repeat is a second request, as outside a sweep
    logger = SignalledTwiceWhileWriting()
    monkeypatch.setattr(dltrain.training.run, "build_loggers", lambda *a, **k: [logger])
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        train(compose([*QUICK, "trainer.max_epochs=3"]), run_dir=run_dir)

    assert info.value.aborted and info.value.signum == signal.SIGINT
    assert logger.epochs == [1, 2]  # the run went no further
    assert "logger failed" not in caplog.text  # not switched off as a logger that failed
    assert logger.finished is not None and logger.finished["status"] == "interrupted"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"] == "aborted by SIGINT"
    # Aborted while epoch 2 was being recorded: the last good last.pt (epoch 1's) stays.
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1


# --- a signal while a custom model starts up ------------------------------------------------------------------------


class SignalInConstructor(nn.Module):
    """Ctrl-C while the user's module is built."""

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        signal.raise_signal(signal.SIGINT)
        self.body = nn.Linear(2, num_outputs)

    def forward(self, x):
        return self.body(x)


class SignalInForward(nn.Module):
    """Ctrl-C during the forward pass dltrain makes to check the model before training."""

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.body = nn.Linear(2, num_outputs)

    def forward(self, x):
        signal.raise_signal(signal.SIGINT)
        return self.body(x)


@pytest.mark.parametrize("net", [SignalInConstructor, SignalInForward])
def test_a_signal_while_a_custom_model_starts_up_is_an_interrupt_not_a_config_error(net, tmp_path, monkeypatch,
                                                                                     capsys):
    run_dir = tmp_path / "run"
    code = run_dltrain([*QUICK[:1], "model=custom", f"model._target_={__name__}.{net.__name__}",
                        f"hydra.run.dir={run_dir}"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 128 + signal.SIGINT
    assert err[-1] == "dltrain: aborted by SIGINT." and "Traceback" not in "\n".join(err)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_reason"] == "aborted by SIGINT"


# --- the command line's boundaries ----------------------------------------------------------------------------------


def test_a_stop_reaching_the_dltrain_boundary_is_one_line_with_the_signals_code(monkeypatch, capsys):
    from dltrain.cli import app as cli

    def stopped() -> None:
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(cli, "_sweep", {**cli._sweep, "dir": None, "summarized": False, "exit_code": 0})
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.run_with_error_boundary(stopped)
    assert done.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "dltrain: interrupted by SIGTERM.\n"


def test_a_stop_reaching_an_inference_tool_is_one_line_with_the_signals_code(capsys):
    def stopped() -> None:
        raise Interrupted(signal.SIGTERM)

    with pytest.raises(SystemExit) as done:
        run_tool("dltrain-eval", stopped)
    assert done.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "dltrain-eval: interrupted by SIGTERM.\n"
