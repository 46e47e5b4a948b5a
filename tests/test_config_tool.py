"""``dltrain-config``: ``list`` marks every option packaged or the user's (a user's file of a packaged
name replacing it), ``copy`` writes a packaged preset into the user's folder and never replaces a
file; unknown configs, a missing folder and bad arguments are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dltrain import compose
from dltrain.cli.config_tool import main

from .conftest import ROOT, tool_error

TOOL = "dltrain-config"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What ``dltrain-config ARGV`` prints, run in this process."""
    main(list(argv))
    return capsys.readouterr().out


def test_copy_writes_the_packaged_file_and_the_copy_is_what_dltrain_then_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "conf"
    out = run(capsys, "copy", "model/mlp", str(conf))
    assert (conf / "model" / "mlp.yaml").read_text() == (ROOT / "conf" / "model" / "mlp.yaml").read_text()
    assert out.strip() == (f"wrote {conf / 'model' / 'mlp.yaml'}: edit it, then run dltrain --config-dir {conf} "
                           "model=mlp (it replaces the packaged one there)")
    edited = (conf / "model" / "mlp.yaml").read_text().replace("hidden: [128, 64]", "hidden: [9]")
    (conf / "model" / "mlp.yaml").write_text(edited)
    assert list(compose(["model=mlp"], config_dir=conf).model.hidden) == [9]

    out = run(capsys, "copy", "experiment/mnist_cnn", str(conf), "--as", "mine")
    packaged = (ROOT / "conf" / "experiment" / "mnist_cnn.yaml").read_text()
    assert (conf / "experiment" / "mine.yaml").read_text() == packaged
    assert out.strip().endswith(f"dltrain --config-dir {conf} experiment=mine")
    run(capsys, "copy", "train", str(conf))
    assert (conf / "train.yaml").read_text() == (ROOT / "conf" / "train.yaml").read_text()


def test_copy_never_replaces_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "model" / "cnn.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# mine\n")
    line = tool_error(capsys, main, TOOL, ["copy", "model/cnn", str(tmp_path)])
    assert line.startswith(f"{TOOL}: error: {mine} exists already: it is never replaced")
    assert mine.read_text() == "# mine\n"


def test_copy_never_replaces_a_file_made_meanwhile_and_leaves_no_partial_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import dltrain.files

    mine = tmp_path / "model" / "cnn.yaml"

    def another_writer_first(target: Path, content: bytes) -> bool:  # the file appears after the check
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_text("# mine\n")
        return publish(target, content)

    publish = dltrain.files.publish
    monkeypatch.setattr("dltrain.cli.config_tool.publish", another_writer_first)
    line = tool_error(capsys, main, TOOL, ["copy", "model/cnn", str(tmp_path)])
    assert line.startswith(f"{TOOL}: error: {mine} exists already: it is never replaced")
    assert mine.read_text() == "# mine\n" and [p.name for p in mine.parent.iterdir()] == ["cnn.yaml"]


def test_a_copy_of_lr_finds_config_is_used_by_dltrain_lr_find(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "copy", "lr_find", str(tmp_path))
    assert out.strip() == (f"wrote {tmp_path / 'lr_find.yaml'}: edit it, then run dltrain-lr-find --config-dir "
                           f"{tmp_path} (it replaces the packaged one there)")
    out = run(capsys, "copy", "lr_find", str(tmp_path), "--as", "mine")
    assert out.strip().endswith(f"run dltrain-lr-find --config-dir {tmp_path} --config-name mine")
    listed = run(capsys, "list").splitlines()
    assert "  lr_find  packaged (dltrain-lr-find's config)" in listed and "  train    packaged" in listed


@pytest.mark.parametrize(("argv", "expected"), [
    (["copy", "modl/cnn", "X"], "modl/cnn: modl is not a config group: did you mean model/cnn?"),
    (["copy", "model/cnnn", "X"], "model/cnnn is not a packaged config: did you mean model/cnn?"),
    (["copy", "nope", "X"], "nope is not a packaged config: copy GROUP/OPTION (e.g. model/cnn) or a primary config"),
    (["copy", "model/cnn", "X", "--as", "a/b"], "--as a/b: give a file name without a folder"),
    (["copy", "model/cnn", "X", "--as", ""], "--as '': give a file name without a folder"),
    (["list", "--config-dir", "absent"], "--config-dir absent: no such folder"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["copy", "model/cnn"], "the following arguments are required: DIR"),
])
def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                               argv: list[str], expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    line = tool_error(capsys, main, TOOL, argv)
    assert line.startswith(f"{TOOL}: error: {expected}"), line
    assert not (tmp_path / "X").exists()


def test_list_marks_each_option_packaged_or_the_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide.yaml").write_text("# new\n")
    (tmp_path / "model" / "cnn.yaml").write_text("# replaces\n")
    (tmp_path / "train.yaml").write_text("# replaces\n")
    lines = run(capsys, "list", "--config-dir", str(tmp_path)).splitlines()

    def entry(group: str, name: str) -> str:
        start = lines.index(f"{group}:")
        return next(line for line in lines[start + 1:] if line.split()[0] == name).split(None, 1)[1]

    assert entry("model", "wide") == f"user: {tmp_path / 'model' / 'wide.yaml'}"
    assert entry("model", "cnn") == f"user: {tmp_path / 'model' / 'cnn.yaml'} (replaces the packaged one)"
    assert entry("model", "mlp") == entry("optim", "adam") == "packaged"
    assert entry("primary configs (--config-name)", "train").endswith("train.yaml (replaces the packaged one)")
    packaged = run(capsys, "list").splitlines()
    groups = {line[:-1] for line in packaged if not line.startswith(" ")}
    assert {p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra"} <= groups
    assert all(line.split()[1] == "packaged" for line in packaged if line.startswith(" "))


def test_the_console_script_imports_no_torch() -> None:
    code = ("import sys; from dltrain.cli.config_tool import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "main(['list']); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: dltrain-config" in proc.stdout and "model:" in proc.stdout
