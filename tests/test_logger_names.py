"""Log lines keep the logger names they always had (``[dltrain.device][INFO] ...`` in
dltrain.log), whichever package a module now lives in."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import dltrain
from dltrain import train

#: Every logger name dltrain's log lines have carried: the package's, and three modules' own.
NAMES = {"dltrain", "dltrain.device", "dltrain.losses", "dltrain.schedulers"}


def test_every_module_logs_under_a_name_it_always_had():
    names = {}
    for info in pkgutil.walk_packages(dltrain.__path__, "dltrain."):
        module = importlib.import_module(info.name)
        log = getattr(module, "log", None)
        if isinstance(log, logging.Logger):
            names[info.name] = log.name
    assert names and set(names.values()) <= NAMES, names


def test_a_run_says_which_device_auto_picked_under_dltrain_device(compose, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dltrain.device"):
        train(compose(["trainer.fast_dev_run=true", "device=auto"]), run_dir=tmp_path)
    assert any(r.name == "dltrain.device" and r.getMessage().startswith("device=auto: using ")
               for r in caplog.records), caplog.records
