"""benchmarks/report.py times every picture the default run draws and prints them in a table."""

from __future__ import annotations

import pytest

from benchmarks import report


@pytest.mark.slow  # two default runs
@pytest.mark.pictures  # the pictures are what it times
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_report_benchmark_times_each_picture_of_the_default_run(capsys):
    assert report.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in out.splitlines()
            if line.startswith("| ") and line.split("|")[2].strip().replace(".", "").isdigit()}
    assert {"gradients.png", "confusion_matrix.png", "curves.png", "worst_predictions.png", "samples.png",
            "all pictures, per run", "the whole run (train, test, report, pictures)"} <= set(rows)
    pictures = [seconds for name, seconds in rows.items() if name.endswith(".png")]
    assert all(seconds > 0 for seconds in pictures)
    assert rows["all pictures, per run"] == pytest.approx(sum(pictures), abs=0.006)  # the rounded rows' sum
    assert rows["the whole run (train, test, report, pictures)"] > rows["all pictures, per run"]
    assert report.plots.plot_curves.__name__ == "plot_curves"  # the clocks are taken off again
