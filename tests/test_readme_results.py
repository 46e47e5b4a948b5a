"""benchmarks/readme_results.py: the README's Experiments table read, planned, formatted and written back."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from benchmarks.readme_results import (
    BEGIN,
    END,
    ReadmeError,
    Row,
    check_mnist_8k,
    main,
    plan,
    provenance,
    region,
    render,
    result_cell,
    table_rows,
    time_cell,
    write_readme,
)

ROOT = Path(__file__).resolve().parents[1]

DOC = f"""# title

intro `dltrain experiment=xor` in prose

{BEGIN}

Measured somewhere.

| command | what it shows | test result | time |
|---|---|---|---|
| `dltrain experiment=sine 'data.function="x|2"'` | a `a|b` cell | r2 0.500 | 3 s |
| `dltrain experiment=mnist_mlp` | MNIST | accuracy 0.900 * | 4 s |
| not a command | x | y | z |

{END}

footnote
"""


def test_rows_are_the_backticked_commands_between_the_markers() -> None:
    rows = table_rows(DOC)
    assert rows == [Row("""dltrain experiment=sine 'data.function="x|2"'""", "a `a|b` cell", "r2 0.500", "3 s"),
                    Row("dltrain experiment=mnist_mlp", "MNIST", "accuracy 0.900 *", "4 s")]
    assert [row.line() for row in rows] == [line for line in DOC.splitlines() if line.startswith("| `")]


def test_a_readme_without_the_markers_is_one_clear_error() -> None:
    with pytest.raises(ReadmeError, match="readme_results:begin"):
        table_rows(DOC.replace(BEGIN, ""))


def test_the_readme_table_is_found_and_each_row_planned_by_its_config() -> None:
    rows = {row.command: row for row in table_rows((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert plan(rows["dltrain experiment=xor"], None) == ([], "")
    assert plan(rows["dltrain experiment=mnist_cnn"], None) == (None, "needs --mnist-root")
    assert plan(rows["dltrain experiment=mnist_cnn"], "/data/m") == (["data.root=/data/m", "data.download=false"], "")
    assert plan(rows["dltrain experiment=cifar10_cnn"], None) == (None, "needs the download")
    assert plan(rows["dltrain experiment=cifar10_fast"], "/data/m") == (None, "needs a CUDA GPU and the download")


def summary(task: str, monitor: str = "val_loss", **test: float) -> dict:
    return {"task": task, "monitor": monitor, "test": test}


def test_the_result_shows_what_the_task_calls_for() -> None:
    assert result_cell(summary("regression", r2=0.97512, rmse=0.1)) == "r2 0.975"
    assert result_cell(summary("multiclass", accuracy=0.98951), " *") == "accuracy 0.990 *"
    assert result_cell(summary("binary", accuracy=0.75, f1=0.7)) == "accuracy 0.750"
    fraud = summary("binary", "val_f1", accuracy=0.9912, f1=0.7651, precision=0.9571, recall=0.6382)
    assert result_cell(fraud) == "f1 0.765, precision 0.957, recall 0.638 (accuracy 0.991)"
    assert [time_cell(s) for s in (0.2, 1.4, 47.6)] == ["< 1 s", "1 s", "48 s"]


def test_every_measured_readme_result_has_the_script_s_format() -> None:
    form = re.compile(r"(accuracy|r2) \d\.\d{3}( \*)?|f1 \d\.\d{3}, precision \d\.\d{3}, recall \d\.\d{3} "
                      r"\(accuracy \d\.\d{3}\)")
    for row in table_rows((ROOT / "README.md").read_text(encoding="utf-8")):
        if not row.result.startswith("not measured"):
            assert form.fullmatch(row.result), row.line()
            assert re.fullmatch(r"(< 1|\d+) s", row.time), row.line()


def test_write_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(DOC, encoding="utf-8")
    rows = [Row("dltrain experiment=xor", "XOR", "accuracy 1.000", "2 s")]
    write_readme(render(rows, "Measured here."), readme)
    text = readme.read_text(encoding="utf-8")
    before, after = DOC.split(BEGIN)[0], DOC.split(END)[1]
    assert text.startswith(before + BEGIN) and text.endswith(END + after)
    assert table_rows(text) == rows and "Measured here." in text and "Measured somewhere." not in text
    assert list(tmp_path.iterdir()) == [readme]  # the temporary file is gone


def _idx_headers(root: Path, train: int, test: int) -> Path:
    """IDX headers (magic number and count) for the four MNIST files under ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count))
    return root


def test_the_mnist_root_must_hold_mnist_8k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_mnist_8k(_idx_headers(tmp_path / "mnist-8k", 8_000, 2_000))
    full = _idx_headers(tmp_path / "full", 60_000, 10_000)
    with pytest.raises(ReadmeError) as info:
        check_mnist_8k(full)
    message = str(info.value)
    assert "train-images-idx3-ubyte holds 60,000 items, not 8,000" in message and "\n" not in message
    assert "dltrain-samples --mnist-8k" in message and "--mnist-root samples/mnist-8k" in message
    (tmp_path / "mnist-8k" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ReadmeError, match="cannot read .*t10k-images-idx3-ubyte"):
        check_mnist_8k(tmp_path / "mnist-8k")
    monkeypatch.setattr("benchmarks.readme_results.measure", lambda *a: pytest.fail("measured another MNIST"))
    with pytest.raises(ReadmeError, match="is not mnist-8k"):
        main(["--mnist-root", str(full)])


def test_the_readme_table_opens_with_the_line_the_script_writes() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = region(text)
    opening = provenance("COMMIT", set()).split(" COMMIT ")[0]  # the words before the commit's name
    assert text[start:end].strip().startswith(opening), (
        "README's Experiments table was not written by python -m benchmarks.readme_results --write")
