"""The benchmarks read MNIST where ``dltrain-samples --mnist-8k`` writes it, inside the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import data_pipeline
from benchmarks import run as benchmark_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [benchmark_run, data_pipeline])
def test_the_mnist_folder_is_the_one_dltrain_samples_writes(module) -> None:
    assert module.MNIST_RAW == ROOT / "samples" / "mnist-8k" / "MNIST" / "raw"


def test_the_benchmark_notes_name_no_folder_outside_the_project() -> None:
    for path in (ROOT / "BENCHMARKS.md", Path(benchmark_run.__file__), Path(data_pipeline.__file__)):
        assert "../" not in path.read_text(encoding="utf-8"), path


def test_without_the_folder_the_data_line_says_how_to_make_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data_pipeline, "MNIST_RAW", tmp_path / "absent")
    x, _, source = data_pipeline.load_data()
    assert x.shape == (8000, 784) and "dltrain-samples --mnist-8k" in source
