"""A sweep over seeds (seed=a,b,c or trainer.repeats=N), summarised by configuration: the grouped
table, sweep_groups.csv, the groups of sweep_summary.json, best_overrides.yaml, sweep.png's
error bars and sweep_curves.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from omegaconf import read_write
from PIL import Image
from rich.console import Console

from dltrain.cli.repeats import expand_repeats, refuse_repeats_in_a_single_run
from dltrain.errors import ConfigError
from dltrain.report.run_files import SWEEP_FILES
from dltrain.report.sweep import BEST_OVERRIDES, CURVES_PLOT, SUMMARY_JSON, SWEEP_PLOT, summarize_sweep
from dltrain.report.sweep_groups import GROUPS_CSV
from dltrain.report.sweep_plots import curves_figure, groups_figure, job_curves

from .conftest import run_cli

#: optim x seed: adam's best values are lower (better) than sgd's; sgd's seed 9 failed.
BEST = {("sgd", 7): 0.50, ("sgd", 8): 0.54, ("sgd", 9): None, ("sgd", 10): 0.52,
        ("adam", 7): 0.30, ("adam", 8): 0.33, ("adam", 9): 0.31, ("adam", 10): 0.32}


def job(sweep_dir: Path, num: int, overrides: list[str], best: float | None) -> None:
    """One job directory as a sweep leaves it, with a summary.json and a 3-epoch metrics.csv."""
    job_dir = sweep_dir / str(num)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if best is None:
        summary: dict[str, Any] = {"status": "failed", "stop_reason": "optim.lr=-1 is out of range", "epochs_run": 0}
    else:
        summary = {"status": "completed", "epochs_run": 3, "best_epoch": 3, "monitor": "val_loss", "mode": "min",
                   "best_value": best, "test": {"loss": best + 0.01, "accuracy": 1 - best}, "train_seconds": 0.1}
        with (job_dir / "metrics.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "train_loss", "val_loss", "lr"])
            writer.writerows([e, best + 0.4 / e, best + 0.2 * (3 - e), 0.1] for e in (1, 2, 3))
    (job_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    """The sweep ``trainer.repeats=4 optim=sgd,adam trainer.max_epochs=3 seed=7``: jobs 0-3 sgd, 4-7 adam,
    the seed varying fastest; as with a real sweep, the jobs' overrides hold their seed, not the repeats,
    which Hydra's multirun.yaml records with the sweep's config."""
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"seed": 7, "trainer": {"repeats": 4}}))
    for num, ((optim, seed), best) in enumerate(BEST.items()):
        job(tmp_path, num, [f"optim={optim}", "trainer.max_epochs=3", f"seed={seed}"], best)
    return tmp_path


def quiet() -> Console:
    return Console(record=True, width=220)


def test_the_groups_are_written_ranked_by_their_mean(seeds: Path) -> None:
    summary = summarize_sweep(seeds, quiet())
    assert summary.groups is not None and summary.params == ["optim", "seed"]
    with (seeds / GROUPS_CSV).open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["rank"], r["optim"], r["n"], r["failed"], r["jobs"]) for r in rows] == [
        ("1", "adam", "4", "0", "4 5 6 7"), ("2", "sgd", "3", "1", "0 1 2 3")]
    assert float(rows[0]["best_value_mean"]) == pytest.approx(0.315)
    assert float(rows[1]["best_value_mean"]) == pytest.approx(0.52)
    assert float(rows[1]["best_value_ci_low"]) < 0.52 < float(rows[1]["best_value_ci_high"])
    assert rows[0]["note"] == "best" and rows[0]["p_vs_best"] == ""
    assert float(rows[1]["p_vs_best"]) < 0.05 and rows[1]["note"] == "worse than best (p<0.05)"
    data = json.loads((seeds / SUMMARY_JSON).read_text())
    assert [g["optim"] for g in data["groups"]] == ["adam", "sgd"] and len(data["jobs"]) == 8
    assert data["groups"][0]["test_accuracy_mean"] == pytest.approx(0.685)


def test_the_console_shows_one_row_per_group(seeds: Path) -> None:
    console = quiet()
    summarize_sweep(seeds, console)
    out = console.export_text()
    assert "sweep: 8 jobs in 2 groups over seeds, ranked by mean best val_loss (min)" in out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [r[:4] for r in rows] == [["1", "adam", "4", "0"], ["2", "sgd", "3", "1"]]
    assert rows[0][4] == "0.315 ± 0.013" and rows[0][5].startswith("[0.29") and rows[0][-1] == "best"
    assert rows[1][-1] == "worse than best (p<0.05)"
    assert "best group: optim=adam (mean val_loss=0.315, n=4): dltrain -m trainer.repeats=4 optim=adam " \
           "trainer.max_epochs=3 seed=7\n" in out
    assert "1 of 8 jobs failed: job 2" in out


def test_best_overrides_names_the_best_group_without_its_seed(seeds: Path) -> None:
    summarize_sweep(seeds, quiet())
    best = yaml.safe_load((seeds / BEST_OVERRIDES).read_text())
    assert best["group"] == {"optim": "adam"} and best["n"] == 4 and best["jobs"] == [4, 5, 6, 7]
    assert best["mean"] == pytest.approx(0.315) and best["ci95"][0] < 0.315 < best["ci95"][1]
    # the repeats of the group again: the same count, from the same first seed (not 0)
    assert best["overrides"] == ["trainer.repeats=4", "optim=adam", "trainer.max_epochs=3", "seed=7"]
    assert best["command"] == "dltrain -m trainer.repeats=4 optim=adam trainer.max_epochs=3 seed=7"


def test_a_seed_sweep_reruns_the_best_group_as_one_run_without_the_seed(tmp_path: Path) -> None:
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"seed": 0, "trainer": {"repeats": 1}}))
    for num, (lr, seed, best) in enumerate([("0.1", 0, 0.4), ("0.1", 1, 0.5), ("0.2", 0, 0.2), ("0.2", 1, 0.3)]):
        job(tmp_path, num, [f"optim.lr={lr}", f"seed={seed}"], best)
    summarize_sweep(tmp_path, quiet())
    best = yaml.safe_load((tmp_path / BEST_OVERRIDES).read_text())
    assert best["group"] == {"optim.lr": "0.2"} and best["command"] == "dltrain optim.lr=0.2"


def test_a_sweep_without_seeds_writes_no_groups(tmp_path: Path) -> None:
    for num, lr in enumerate(["0.1", "0.2"]):
        job(tmp_path, num, [f"optim.lr={lr}"], 0.3 + num / 10)
    summary = summarize_sweep(tmp_path, quiet())
    assert summary.groups is None and not (tmp_path / GROUPS_CSV).exists()
    assert "groups" not in json.loads((tmp_path / SUMMARY_JSON).read_text())
    assert (tmp_path / CURVES_PLOT).is_file()  # the curves of an ungrouped sweep too


def test_the_new_files_are_listed_and_drawn(seeds: Path) -> None:
    names = [entry.name for entry in SWEEP_FILES]
    assert GROUPS_CSV in names and CURVES_PLOT in names
    summarize_sweep(seeds, quiet())
    for name in (SWEEP_PLOT, CURVES_PLOT):
        with Image.open(seeds / name) as image:
            assert image.format == "PNG" and image.width > 300


def test_sweep_png_draws_each_group_with_its_95_ci(seeds: Path) -> None:
    summary = summarize_sweep(seeds, quiet())
    fig = groups_figure(summary.groups, monitor="val_loss", mode="min")
    [ax] = fig.axes
    [bars] = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    # the error bar of each group spans its confidence interval
    segments = bars.lines[2][0].get_segments()
    for segment, group in zip(segments, summary.groups, strict=True):
        stat = group.stats["best_value"]
        assert (segment[0][1], segment[1][1]) == (pytest.approx(stat.ci_low), pytest.approx(stat.ci_high))
    assert ax.get_ylabel() == "best val_loss: mean and 95% CI"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["optim=adam\nn=4", "optim=sgd\nn=3, 1 failed"]
    assert "95% CI of the mean" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_png_draws_no_bars_on_an_axis_that_does_not_start_at_0(seeds: Path, tmp_path: Path) -> None:
    summary = summarize_sweep(seeds, quiet())  # every value between 0.29 and 0.55: the axis is zoomed in
    [ax] = groups_figure(summary.groups, monitor="val_loss", mode="min").axes
    assert ax.get_ylim()[0] > 0.1 and not ax.patches  # no bar, whose height would read from the cut
    [means] = [c for c in ax.collections if c.get_label() == "group mean"]
    assert [y for _, y in means.get_offsets()] == pytest.approx([0.315, 0.52])
    assert "group mean" in [t.get_text() for t in ax.get_legend().get_texts()]

    near_zero = tmp_path / "near_zero"  # values close to 0: the axis starts at 0, and bars compare
    for num, (lr, best) in enumerate([("0.1", 0.02), ("0.1", 0.03), ("0.2", 0.2), ("0.2", 0.25)]):
        job(near_zero, num, [f"optim.lr={lr}", f"seed={num % 2}"], best)
    summary = summarize_sweep(near_zero, quiet())
    [ax] = groups_figure(summary.groups, monitor="val_loss", mode="min").axes
    assert ax.get_ylim()[0] <= 0 and [bar.get_height() for bar in ax.patches] == pytest.approx([0.025, 0.225])
    assert not [c for c in ax.collections if c.get_label() == "group mean"]


def test_sweep_curves_has_a_line_per_job_and_a_colour_per_group(seeds: Path) -> None:
    summary = summarize_sweep(seeds, quiet())
    curves = job_curves(seeds, summary.rows, summary.groups, summary.params, "val_loss")
    assert [label for label, _ in curves] == ["optim=adam"] * 4 + ["optim=sgd"] * 3  # the failed job has none
    assert curves[0][1] == [(1.0, pytest.approx(0.7)), (2.0, pytest.approx(0.5)), (3.0, pytest.approx(0.3))]
    [ax] = curves_figure(curves, monitor="val_loss", grouped=True).axes
    thin = [line for line in ax.lines if line.get_linewidth() < 1]
    thick = [line for line in ax.lines if line.get_linewidth() > 2]
    assert len(thin) == 7 and len(thick) == 2
    assert {to_hex(line.get_color()) for line in thin[:4]} == {to_hex(thick[0].get_color())}
    assert to_hex(thick[0].get_color()) != to_hex(thick[1].get_color())
    assert list(thick[0].get_ydata()) == pytest.approx([0.715, 0.515, 0.315])  # adam's mean per epoch
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["optim=adam (mean of 4)", "optim=sgd (mean of 3)"]
    assert ax.get_ylabel() == "val_loss" and ax.get_xlabel() == "epoch"

    [ax] = curves_figure([("job 0", [(1, 0.5)]), ("job 1", [(1, 0.4)])], monitor="val_loss", grouped=False).axes
    assert len({to_hex(line.get_color()) for line in ax.lines}) == 2


def _hydra_config(overrides: list[str], task: list[str]):
    from dltrain.config.validation import CONFIG_MODULE, CONFIG_NAME, register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        config = hydra_compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    with read_write(config.hydra.overrides):  # as a multirun leaves them: the sweep's values unexpanded
        config.hydra.overrides.task = task
    return config


def test_repeats_add_a_seed_sweep_from_the_configs_seed() -> None:
    config = _hydra_config(["trainer.repeats=3", "seed=7"], ["trainer.repeats=3", "seed=7", "optim=sgd,adam"])
    expand_repeats(config)
    # trainer.repeats leaves the jobs' overrides: each job's overrides run it again as one run
    assert list(config.hydra.overrides.task) == ["optim=sgd,adam", "seed=7,8,9"]
    refuse_repeats_in_a_single_run(_hydra_config(["optim=adam", "seed=8"], []))
    config = _hydra_config([], ["optim=sgd,adam"])
    expand_repeats(config)  # repeats=1: the sweep as given
    assert list(config.hydra.overrides.task) == ["optim=sgd,adam"]


@pytest.mark.parametrize(("overrides", "task", "says"), [
    (["trainer.repeats=3"], ["trainer.repeats=3", "seed=0,1"], "both repeat each configuration over seeds"),
    ([], ["trainer.repeats=1,3"], "trainer.repeats cannot be swept"),
    (["trainer.repeats=2", "hydra/sweeper=optuna"], ["trainer.repeats=2"], "needs Hydra's basic sweeper"),
])
def test_repeats_that_cannot_be_expanded_are_refused(overrides: list[str], task: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        expand_repeats(_hydra_config(overrides, task))


def test_repeats_in_a_single_run_are_refused_with_the_fix() -> None:
    refuse_repeats_in_a_single_run(_hydra_config([], []))
    with pytest.raises(ConfigError, match=r"add -m \(dltrain -m trainer.repeats=2"):
        refuse_repeats_in_a_single_run(_hydra_config(["trainer.repeats=2"], []))


@pytest.mark.slow
def test_a_real_sweep_with_repeats_prints_the_grouped_table(tmp_path: Path) -> None:
    proc = run_cli(["-m", "trainer.repeats=2", "optim=sgd,adam", "trainer.fast_dev_run=true", "data=xor",
                    "model.hidden=[8]", "seed=7", "hydra.sweep.dir=S"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "sweep: 4 jobs in 2 groups over seeds" in proc.stdout
    overrides = [yaml.safe_load((tmp_path / "S" / str(i) / ".hydra" / "overrides.yaml").read_text()) for i in range(4)]
    assert [o[-1] for o in overrides] == ["seed=7", "seed=8", "seed=7", "seed=8"]
    best = yaml.safe_load((tmp_path / "S" / BEST_OVERRIDES).read_text())
    assert best["n"] == 2 and best["command"].startswith("dltrain -m trainer.repeats=2 optim=")
    assert best["command"].endswith(" seed=7") and f"n=2): {best['command']}\n" in proc.stdout
    assert (tmp_path / "S" / GROUPS_CSV).is_file() and (tmp_path / "S" / CURVES_PLOT).is_file()
    with (tmp_path / "S" / "sweep_summary.csv").open(newline="") as f:
        job_1 = next(row for row in csv.DictReader(f) if row["job"] == "1")
    assert "trainer.repeats" not in job_1["overrides"] and job_1["overrides"].endswith("seed=8")
    rerun = run_cli([*job_1["overrides"].split(), "hydra.run.dir=one"], tmp_path)  # a job re-runs as one run
    assert rerun.returncode == 0, rerun.stderr


README_SWEEP = "dltrain -m seed=0,1,2,3,4 optim=sgd,adam"


def _table_rows(text: str) -> list[str]:
    """The body rows of the grouped table in ``text`` (each job prints a table of its own before it)."""
    table = text.split(" groups over seeds, ", 1)[1].split("\n└", 1)[0]
    return [line.rstrip() for line in table.splitlines() if line.startswith("│")]


@pytest.mark.slow
def test_the_readmes_grouped_table_is_what_its_command_prints(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split(f"$ {README_SWEEP}\n", 1)[1].split("```", 1)[0]
    proc = run_cli(README_SWEEP.split()[1:], tmp_path, timeout=900)  # ten digits runs of 30 epochs: minutes
    assert proc.returncode == 0, proc.stderr
    printed = _table_rows(proc.stdout)
    assert len(printed) == 2 and _table_rows(block) == printed


def test_a_single_run_with_repeats_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(["trainer.repeats=2", "data=xor"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "dltrain: error: trainer.repeats=2 repeats each configuration as a sweep: add -m "
        "(dltrain -m trainer.repeats=2 ...), or remove it for a single run."]
    assert not (tmp_path / "outputs").exists()
