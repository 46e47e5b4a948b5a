"""``dltrain -m``: sweeps that go on past a failing job and summarise themselves, the
launcher and sweeper plugins, and run directories that never collide."""

from __future__ import annotations

import csv
import json
import re
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import read_write
from PIL import Image

from dltrain.files import claim_new_dir

from .conftest import run_cli

#: A tiny, quick experiment: every job of these sweeps trains in well under a second.
QUICK = ["data=xor", "model.hidden=[8]", "trainer.batch_size=32"]


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / "multirun").glob("*/*") if p.is_dir())


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # not a blank canvas


def test_failing_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    # The acceptance grid: two jobs with an invalid learning rate among four.
    proc = run_cli(["-m", "optim=sgd,adam", "optim.lr=0.05,-1", "trainer.max_epochs=2", *QUICK], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dltrain: error:")]
    assert errors[:2] == [
        "dltrain: error: job 1 (optim=sgd optim.lr=-1 trainer.max_epochs=2 data=xor model.hidden=[8] "
        "trainer.batch_size=32) failed: optim.lr=-1.0 is out of range: it must be >= 0.",
        "dltrain: error: job 3 (optim=adam optim.lr=-1 trainer.max_epochs=2 data=xor model.hidden=[8] "
        "trainer.batch_size=32) failed: optim.lr=-1.0 is out of range: it must be >= 0."]
    assert errors[2].startswith("dltrain: error: 2 of 4 jobs failed (job 1, 3): see ") and len(errors) == 3

    [sweep] = sweep_dirs(tmp_path)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", sweep.parent.name) and re.fullmatch(r"\d{2}-\d{2}-\d{2}", sweep.name)
    assert not (tmp_path / "multirun").exists()
    rows = read_csv(sweep / "sweep_summary.csv")
    assert len(rows) == 4
    by_job = {int(row["job"]): row for row in rows}
    assert [by_job[j]["status"] for j in range(4)] == ["completed", "failed", "completed", "failed"]
    assert [(by_job[j]["optim"], by_job[j]["optim.lr"]) for j in range(4)] == [
        ("sgd", "0.05"), ("sgd", "-1"), ("adam", "0.05"), ("adam", "-1")]
    assert by_job[1]["message"] == "optim.lr=-1.0 is out of range: it must be >= 0"
    # Ranked by the best val_loss: the two completed jobs first, in order of their value.
    assert [row["status"] for row in rows] == ["completed", "completed", "failed", "failed"]
    assert float(rows[0]["best_value"]) <= float(rows[1]["best_value"])
    assert rows[0]["monitor"] == "val_loss" and rows[0]["test_accuracy"] != ""

    for job in (0, 2):
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs_run"] == 2
        assert_png(sweep / str(job) / "curves.png")
    for job in (1, 3):
        failed = json.loads((sweep / str(job) / "summary.json").read_text())
        assert failed["status"] == "failed" and "optim.lr=-1.0 is out of range" in failed["stop_reason"]

    data = json.loads((sweep / "sweep_summary.json").read_text())
    assert data["num_jobs"] == 4 and data["num_failed"] == 2 and data["best_job"] == int(rows[0]["job"])
    best = yaml.safe_load((sweep / "best_overrides.yaml").read_text())
    assert best["job"] == int(rows[0]["job"])
    assert best["overrides"] == rows[0]["overrides"].split(" ")
    assert best["command"] == "dltrain " + " ".join(
        f"'{o}'" if "[" in o else o for o in best["overrides"])
    assert_png(sweep / "sweep.png")
    assert "ranked by best val_loss (min)" in proc.stdout and f"best: job {best['job']}" in proc.stdout


@pytest.mark.slow
def test_a_diverged_job_and_a_crashed_job_do_not_stop_the_sweep(tmp_path):
    # A custom module that, with mode=crash, fails on the training batches: a bug in user
    # code, so its traceback is shown. The grid: (ok, 1e12) diverges, (ok, 0.1) completes,
    # and both crash jobs fail.
    (tmp_path / "crashy.py").write_text(
        "from torch import nn\n\n"
        "class Crashy(nn.Module):\n"
        "    def __init__(self, input_shape, num_outputs, mode='ok'):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(input_shape[0], num_outputs)\n"
        "        self.mode = mode\n\n"
        "    def forward(self, x):\n"
        "        if self.mode == 'crash' and len(x) > 2:\n"
        "            raise ArithmeticError('forward broke on a real batch')\n"
        "        return self.fc(x)\n")
    proc = run_cli(["-m", "model=custom", "model._target_=crashy.Crashy", "+model.mode=ok,crash", "optim=sgd",
                    "optim.lr=1e12,0.01", "trainer.max_epochs=2", "data=sine"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    [sweep] = sweep_dirs(tmp_path)
    rows = read_csv(sweep / "sweep_summary.csv")
    huge = "1000000000000.0"  # how Hydra writes 1e12 back
    statuses = {(row["model.mode"], row["optim.lr"]): row for row in rows}
    assert {key: row["status"] for key, row in statuses.items()} == {
        ("ok", huge): "diverged", ("ok", "0.01"): "completed", ("crash", huge): "failed",
        ("crash", "0.01"): "failed"}
    assert "lower optim.lr" in statuses[("ok", huge)]["message"]
    assert "ArithmeticError: forward broke on a real batch" in statuses[("crash", "0.01")]["message"]
    assert proc.stderr.count("Traceback") == 2  # a bug keeps its traceback, and the sweep goes on
    assert "dltrain: error: 3 of 4 jobs failed" in proc.stderr
    diverged_dir = sweep / statuses[("ok", huge)]["run_dir"]
    assert json.loads((diverged_dir / "summary.json").read_text())["status"] == "diverged"
    assert_png(sweep / statuses[("ok", "0.01")]["run_dir"] / "curves.png")


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim=sgd,adam",
                    "trainer.max_epochs=2", *QUICK], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    [sweep] = sweep_dirs(tmp_path)
    rows = read_csv(sweep / "sweep_summary.csv")
    assert sorted((row["job"], row["optim"], row["status"]) for row in rows) == [
        ("0", "sgd", "completed"), ("1", "adam", "completed")]
    for job in ("0", "1"):
        assert_png(sweep / job / "curves.png")


@pytest.mark.slow
def test_optuna_searches_in_the_direction_of_the_monitored_metric(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
                    "optim.lr=tag(log,interval(0.0001,0.1))", "trainer.early_stopping.monitor=val_accuracy",
                    "trainer.max_epochs=2", *QUICK], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Directions: ['maximize']" in proc.stdout + proc.stderr  # val_accuracy: larger is better
    [sweep] = sweep_dirs(tmp_path)
    rows = read_csv(sweep / "sweep_summary.csv")
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    assert all(1e-4 <= float(row["optim.lr"]) <= 0.1 for row in rows)
    # Each trial returned its best val_accuracy: optuna's best is the summary's rank 1.
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_value"] == pytest.approx(float(rows[0]["best_value"]), rel=1e-5)
    assert float(rows[0]["best_value"]) >= max(float(row["best_value"]) for row in rows)
    assert_png(sweep / "sweep.png")


@pytest.mark.slow
def test_the_optuna_direction_on_the_command_line_wins(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=maximize",
                    "optim.lr=interval(0.001,0.01)", "trainer.fast_dev_run=true", *QUICK], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Directions: ['maximize']" in proc.stdout + proc.stderr  # although val_loss is minimised


def _hydra_config(overrides: list[str]):
    from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME, register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("overrides", "plugin", "node", "target", "values"), [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "hydra_joblib_launcher", "launcher",
     "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    (["hydra/sweeper=optuna", "hydra.sweeper.n_trials=4"], "hydra_optuna_sweeper", "sweeper",
     "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", {"n_trials": 4}),
    (["hparams_search=optuna"], "hydra_optuna_sweeper", "sweeper",
     "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
     {"n_trials": 20, "study_name": "dltrain", "n_jobs": 1}),
    (["hydra/launcher=submitit_slurm"], "hydra_submitit_launcher", "launcher",
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", {}),
    (["hydra/launcher=submitit_local"], "hydra_submitit_launcher", "launcher",
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", {}),
    (["cluster=slurm", "hydra.launcher.partition=gpu"], "hydra_submitit_launcher", "launcher",
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
     {"partition": "gpu", "gpus_per_node": 1, "tasks_per_node": 1, "timeout_min": 240}),
    (["cluster=local"], "hydra_submitit_launcher", "launcher",
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", {"gpus_per_node": 0}),
    (["cluster=slurm_ddp", "hydra.launcher.gpus_per_node=8", "hydra.launcher.nodes=2"], "hydra_submitit_launcher",
     "launcher", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
     {"gpus_per_node": 8, "tasks_per_node": 8, "nodes": 2, "max_num_timeout": 3, "signal_delay_s": 120}),
])
def test_launcher_and_sweeper_configs_compose(overrides, plugin, node, target, values):
    pytest.importorskip(f"hydra_plugins.{plugin}")
    cfg = _hydra_config(overrides)
    chosen = cfg.hydra[node]
    assert chosen._target_ == target
    assert get_class(target).__name__ == target.rsplit(".", 1)[1]  # the plugin's class imports
    for key, value in values.items():
        assert chosen[key] == value
    if overrides == ["hparams_search=optuna"]:
        assert set(chosen.params) == {"optim.lr", "trainer.batch_size", "regularization.dropout",
                                      "regularization.l2"}
        assert chosen.sampler.seed == cfg.seed
        assert cfg.trainer.max_epochs == 30  # the search leaves the epochs (and an experiment's) alone
    if overrides[0].startswith("cluster="):
        assert str(chosen.submitit_folder).endswith("/.submitit/%j")
    if overrides[0] in ("cluster=slurm", "cluster=slurm_ddp"):  # a requeued job continues its own run
        assert cfg.resume == "auto"


@pytest.mark.parametrize(("overrides", "direction"), [
    (["trainer.early_stopping.monitor=val_accuracy"], "maximize"),
    (["trainer.early_stopping.monitor=val_accuracy", "trainer.early_stopping.mode=min"], "minimize"),
    ([], "minimize"),
    (["trainer.early_stopping.monitor=train_loss"], "minimize"),
])
def test_the_optuna_direction_follows_the_monitored_metric(overrides, direction):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from omegaconf import open_dict, read_write

    from dltrain.cli.app import _set_sweep_direction

    cfg = _hydra_config(["hydra/sweeper=optuna", *overrides])
    with read_write(cfg.hydra.sweeper), open_dict(cfg.hydra.sweeper):  # the wrong way round, to start from
        cfg.hydra.sweeper.direction = "minimize" if direction == "maximize" else "maximize"
    _set_sweep_direction(cfg)
    assert cfg.hydra.sweeper.direction == direction


def test_the_optuna_direction_given_on_the_command_line_stands():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from dltrain.cli.app import _set_sweep_direction

    cfg = _hydra_config(["hydra/sweeper=optuna", "hydra.sweeper.direction=minimize",
                         "trainer.early_stopping.monitor=val_accuracy"])  # which alone would maximise
    _set_sweep_direction(cfg)
    assert cfg.hydra.sweeper.direction == "minimize"


def test_the_basic_sweeper_has_no_direction_to_set():
    from dltrain.cli.app import _set_sweep_direction

    cfg = _hydra_config(["trainer.early_stopping.monitor=val_accuracy"])
    _set_sweep_direction(cfg)
    assert "direction" not in cfg.hydra.sweeper


def test_a_missing_plugin_names_the_extra_to_install():
    from hydra.errors import MissingConfigException

    from dltrain.cli.app import describe_error

    err = MissingConfigException("In 'train': Could not find 'hydra/sweeper/optuna'", "hydra/sweeper/optuna",
                                 options=["basic"])
    assert describe_error(err) == ("hydra/sweeper=optuna needs a Hydra plugin that is not installed: "
                                   "pip install 'dltrain[optuna]'.")
    err = MissingConfigException("In 'train': Could not find 'optim/adamm'", "optim/adamm", options=["adam", "sgd"])
    assert describe_error(err) == ("optim=adamm is not a known option: did you mean optim=adam? "
                                   "(choose one of adam, sgd).")


def test_claim_new_dir_takes_the_next_free_name(tmp_path):
    base = tmp_path / "outputs" / "12-00-00"
    assert claim_new_dir(str(base)) == str(base) and base.is_dir()
    assert claim_new_dir(str(base)) == f"{base}_2"
    assert claim_new_dir(str(base)) == f"{base}_3"
    assert sorted(p.name for p in base.parent.iterdir()) == ["12-00-00", "12-00-00_2", "12-00-00_3"]


def _taken_seconds(root: Path, seconds: int = 20) -> list[Path]:
    """Occupy the run directories of the next ``seconds`` seconds, as runs that started
    then would have."""
    now = datetime.now()
    taken = []
    for delta in range(-1, seconds):
        t = now + timedelta(seconds=delta)
        folder = root / t.strftime("%Y-%m-%d") / t.strftime("%H-%M-%S")
        folder.mkdir(parents=True, exist_ok=True)
        taken.append(folder)
    return taken


@pytest.mark.slow
def test_a_sweep_started_in_a_taken_second_gets_its_own_directory(tmp_path):
    taken = _taken_seconds(tmp_path / "outputs" / "multirun")
    proc = run_cli(["-m", "optim=sgd,adam", "trainer.fast_dev_run=true", *QUICK], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [sweep] = [p for p in sweep_dirs(tmp_path) if p not in taken]
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}_2", sweep.name)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert all(not any(folder.iterdir()) for folder in taken)  # nothing written into another run's folder
    assert len(read_csv(sweep / "sweep_summary.csv")) == 2


@pytest.mark.slow
def test_a_run_started_in_a_taken_second_gets_its_own_directory(tmp_path):
    taken = _taken_seconds(tmp_path / "outputs")
    proc = run_cli(["trainer.fast_dev_run=true", *QUICK], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [run] = [p for p in (tmp_path / "outputs").glob("*/*") if p not in taken]
    assert run.name.endswith("_2") and (run / "summary.json").is_file()
    assert all(not any(folder.iterdir()) for folder in taken)


@pytest.mark.slow
def test_logger_tensorboard_writes_an_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    proc = run_cli(["logger=tensorboard", "trainer.max_epochs=2", "hydra.run.dir=run", *QUICK], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [events] = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    assert [event.step for event in acc.Scalars("loss/val")] == [1, 2]
    assert (tmp_path / "run" / "metrics.csv").is_file()  # written whatever the logger
    assert_png(tmp_path / "run" / "curves.png")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_a_signal_stops_the_whole_sweep(tmp_path):
    from .test_signals import ENDLESS, finish, start, wait_for_file

    proc = start(["-m", "optim=sgd,adam,rmsprop", *ENDLESS, *QUICK], tmp_path)
    try:
        first = tmp_path / "outputs" / "multirun"
        deadline = datetime.now() + timedelta(seconds=90)
        while not list(first.glob("*/*/0/metrics.csv")):
            assert proc.poll() is None and datetime.now() < deadline
        [metrics] = list(first.glob("*/*/0/metrics.csv"))
        wait_for_file(metrics, proc)
        proc.send_signal(signal.SIGINT)
        stderr = finish(proc, timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    sweep = metrics.parent.parent
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]  # jobs 1 and 2 never started
    [row] = read_csv(sweep / "sweep_summary.csv")
    assert row["status"] == "interrupted"
    assert json.loads((sweep / "0" / "summary.json").read_text())["checkpoint"].endswith("last.pt")
    assert "dltrain: interrupted by SIGINT" in stderr and "continue with resume=" in stderr


def test_a_value_hydra_cannot_compose_stops_the_sweep_before_its_first_job(tmp_path):
    proc = run_cli(["-m", "optim.lr=0.1,abc", "trainer.fast_dev_run=true", *QUICK], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("dltrain: error: optim.lr=abc is not a number: optim.lr takes a float")
    assert proc.stderr.count("\n") == 1
    assert sweep_dirs(tmp_path) == []  # no job ran: the sweep directory it claimed is gone again


def test_a_signal_crosses_from_a_worker_process_intact():
    import pickle

    from dltrain.cli.app import SweepStopped
    from dltrain.training.signals import Interrupted

    stopped = pickle.loads(pickle.dumps(SweepStopped(Interrupted(signal.SIGTERM, "stopped in epoch 2", aborted=True))))
    assert isinstance(stopped, SweepStopped) and str(stopped.interrupted) == "stopped in epoch 2"
    assert stopped.interrupted.exit_code == 143 and stopped.interrupted.aborted


def test_a_sweep_directory_that_holds_runs_is_refused(tmp_path):
    old = tmp_path / "S" / "0"
    old.mkdir(parents=True)
    (old / "metrics.csv").write_text("epoch\n1\n")
    (old / "summary.json").write_text('{"status": "completed"}')
    proc = run_cli(["-m", "hydra.sweep.dir=S", "optim=sgd,adam", "trainer.fast_dev_run=true", *QUICK], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("dltrain: error: hydra.sweep.dir=S already holds runs: dltrain never mixes a sweep with "
                           "them; choose another directory.\n")
    assert (old / "summary.json").read_text() == '{"status": "completed"}'  # untouched
    assert sorted(p.name for p in (tmp_path / "S").iterdir()) == ["0"]


def test_a_sweep_without_job_config_folders_is_refused(tmp_path):
    proc = run_cli(["-m", "hydra.output_subdir=null", "optim=sgd,adam", "trainer.fast_dev_run=true"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("dltrain: error: hydra.output_subdir=null: a sweep's summary reads each job's")
    assert proc.stderr.count("\n") == 1


def test_multirun_with_cfg_is_one_line(tmp_path):
    proc = run_cli(["-m", "--cfg", "job", "optim=sgd,adam"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dltrain: error: Only one of --run, --multirun") and proc.stderr.count("\n") == 1


def test_the_claimed_sweep_directory_reaches_the_jobs_quoted(tmp_path, monkeypatch):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dltrain.cli.app import SweepReport

    monkeypatch.chdir(tmp_path)
    odd = "sweeps/lr=0.1,x'y"
    cfg = _hydra_config([f"hydra.sweep.dir=\"{odd}\""])
    with read_write(cfg.hydra.overrides):  # as if a preset had set it, not the command line
        cfg.hydra.overrides.hydra = []
    SweepReport().on_multirun_start(cfg)
    [override] = cfg.hydra.overrides.hydra
    parsed = OverridesParser.create().parse_override(override)
    assert parsed.key_or_group == "hydra.sweep.dir" and parsed.value() == odd
    assert (tmp_path / odd).is_dir()


@pytest.mark.slow
def test_an_optuna_search_where_every_trial_fails_is_one_line(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    proc = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "optim.lr=interval(-2,-1)",
                    "trainer.fast_dev_run=true", *QUICK], tmp_path, timeout=240)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dltrain: error: 2 of 2 jobs failed (job 0, 1)") and "No trials are completed yet" in last
    [sweep] = sweep_dirs(tmp_path)
    assert [row["status"] for row in read_csv(sweep / "sweep_summary.csv")] == ["failed", "failed"]
