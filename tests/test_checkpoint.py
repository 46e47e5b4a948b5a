"""Atomic checkpoint writes and loads that never unpickle code."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

from dltrain.errors import UserError
from dltrain.files import TMP_PREFIX
from dltrain.training.checkpoint import load_checkpoint, save_checkpoint


def state(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "epoch": 2, "history": [{"loss": 0.5}], "name": "x"}


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(state(), tmp_path / "ckpt" / "last.pt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.ones(3)) and loaded["epoch"] == 2
    assert load_checkpoint(path)["history"] == [{"loss": 0.5}]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(state(1.0), tmp_path / "last.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match="could not write checkpoint .*last.pt: No space left on device"):
        save_checkpoint(state(2.0), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_error_raised_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(state(1.0), tmp_path / "best.pt")
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(UserError, match="could not write checkpoint .*best.pt: boom; the previous checkpoint"):
        save_checkpoint(state(2.0), path)
    assert path.read_bytes() == before
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint .*nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(state(), tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=r"checkpoint .*last.pt cannot be loaded"):
        load_checkpoint(path)


def test_not_a_dltrain_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="not a dltrain checkpoint"):
        load_checkpoint(path)


class _CreatesFile:
    """Unpickling this would create a file: what a malicious checkpoint does."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        torch.save({"model": {}, "payload": _CreatesFile(str(marker))}, f, pickle_module=pickle)
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_real_write_failure_inside_torch_save_is_one_clear_error(tmp_path):
    # The kernel refuses the write itself (a file-size limit, as a full disk would): torch's
    # zip writer then raises its own RuntimeError mid-save, not an OSError.
    script = f"""
import resource, signal, torch
from dltrain.training.checkpoint import save_checkpoint
from dltrain.errors import UserError
path = {str(tmp_path / "last.pt")!r}
save_checkpoint({{"model": {{"w": torch.zeros(10)}}}}, path)
before = open(path, "rb").read()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    save_checkpoint({{"model": {{"w": torch.zeros(1_000_000)}}}}, path)
except UserError as err:
    print("ERROR", err)
assert open(path, "rb").read() == before
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ERROR could not write checkpoint ") and proc.stdout.count("\n") == 1
    assert "the previous checkpoint is unchanged" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
