"""Atomic checkpoint writes and loads that never unpickle code."""

from __future__ import annotations

import pickle

import pytest
import torch

from dltrain.checkpoint import load_checkpoint, save_checkpoint
from dltrain.errors import UserError
from dltrain.files import TMP_PREFIX


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
    with pytest.raises(RuntimeError, match="boom"):
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
