"""RunLogger: a run's logger over its lifetime, which never costs the run its results."""

from __future__ import annotations

import logging
import signal

import pytest

from dltrain.loggers import Logger, RunLogger
from dltrain.training.signals import Interrupted


class Recording(Logger):
    """Records the rows it is given; ``fail`` names the hooks that raise ``OSError``."""

    def __init__(self, *fail: str) -> None:
        self.fail, self.rows, self.finished = set(fail), [], []

    def start(self, hparams, config_yaml):
        if "start" in self.fail:
            raise OSError("no such directory")

    def log_epoch(self, row):
        self.rows.append(row)
        if "log_epoch" in self.fail:
            raise OSError("disk gone")

    def finish(self, summary):
        self.finished.append(summary)
        if "finish" in self.fail:
            raise OSError("disk gone")


def test_every_epoch_reaches_a_logger_that_works():
    logger = Recording()
    run_logger = RunLogger(logger)
    run_logger.start({"seed": 0}, "seed: 0\n")
    for epoch in (1, 2, 3):
        run_logger.log_epoch({"epoch": epoch})
    run_logger.finish({"status": "completed"})
    assert logger.rows == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}] and logger.finished == [{"status": "completed"}]


def test_a_logger_that_fails_an_epoch_is_off_for_the_rest_of_the_run(caplog):
    logger = Recording("log_epoch")
    run_logger = RunLogger(logger)
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        for epoch in (1, 2, 3):
            run_logger.log_epoch({"epoch": epoch})
    assert logger.rows == [{"epoch": 1}] and not run_logger.on
    assert caplog.messages == ["warning: the Recording logger failed and is off for the rest of the run: disk gone"]
    run_logger.finish({"status": "completed"})  # still closes its files
    assert logger.finished == [{"status": "completed"}]


def test_a_logger_that_cannot_finish_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dltrain"):
        RunLogger(Recording("finish")).finish({"status": "completed"})
    assert caplog.messages == ["warning: the Recording logger could not finish: disk gone"]


def test_a_logger_that_cannot_start_fails_the_start():
    with pytest.raises(OSError, match="no such directory"):
        RunLogger(Recording("start")).start({}, "")


@pytest.mark.parametrize("hook", ["log_epoch", "finish"])
def test_a_signal_while_the_logger_writes_goes_through_and_leaves_it_on(hook, caplog):
    class Stopped(Recording):
        """Interrupted the first time ``hook`` is called; records every later call."""

        def log_epoch(self, row):
            self._stop_once("log_epoch")
            super().log_epoch(row)

        def finish(self, summary):
            self._stop_once("finish")
            super().finish(summary)

        def _stop_once(self, name):
            if name == hook and not getattr(self, "stopped", False):
                self.stopped = True
                raise Interrupted(signal.SIGINT)

    logger = Stopped()
    run_logger = RunLogger(logger)
    with caplog.at_level(logging.WARNING, logger="dltrain"), pytest.raises(Interrupted):
        getattr(run_logger, hook)({"epoch": 1})
    assert caplog.messages == []  # a signal is no logger failure: nothing said, nothing switched off
    run_logger.log_epoch({"epoch": 2})
    run_logger.finish({"status": "interrupted"})
    assert logger.rows == [{"epoch": 2}] and logger.finished == [{"status": "interrupted"}]


@pytest.fixture
def hydra_job():
    """``hydra_job(overrides)``: this process as a job Hydra runs with those command-line overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME

    def job(overrides: list[str]) -> None:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            HydraConfig.instance().set_config(hydra_compose(CONFIG_NAME, overrides, return_hydra_config=True))

    yield job
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def test_the_hparams_hold_every_key_the_command_line_set(compose, hydra_job):
    from dltrain.build import run_hparams
    from dltrain.config.hydra_job import command_line_keys

    overrides = ["optim=sgd", "optim.momentum=0.5", "model.hidden=[8]", "trainer.max_epochs=4"]
    cfg = compose(overrides)
    assert command_line_keys() is None  # not under Hydra: the Python API
    plain = run_hparams(cfg)
    hydra_job(overrides)
    assert command_line_keys() == {"optim.name", "optim.momentum", "model.hidden", "trainer.max_epochs"}
    hparams = run_hparams(cfg)
    assert hparams == {**plain, "optim.momentum": 0.5, "model.hidden": "[8]"}
    assert hparams["optim"] == "sgd" and hparams["trainer.max_epochs"] == 4
