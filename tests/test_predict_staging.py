"""The hidden folder in which ``dltrain-predict returns=reconstructions`` keeps its new images
until every input is read is never left behind: SIGTERM ends the run through the same discard
as an error, and the folder of a killed run (SIGKILL, a power cut) is removed by the next run of
the same output, but only when its mark proves that this tool made it in a process that is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dltrain import compose, train
from tests.test_autoencoder_outputs import digit_pngs
from tests.test_autoencoder_transfer import FAST
from tests.test_predict_reconstructions import contents


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory) -> Path:
    """An MLP autoencoder's best.pt (one batch of digits), as tests/test_predict_reconstructions.py makes it."""
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    train(compose(["task=autoencoder", "model.hidden=[16]", "model.bottleneck=4", *FAST]), run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def gone_pid() -> int:
    """The process id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def staged(parent: Path, name: str, files: dict[str, bytes], mark: dict | None) -> Path:
    """A hidden folder ``name`` under ``parent`` holding ``files`` and, unless None, ``mark`` as its staging mark."""
    from dltrain.inference.predict_autoencoder import STAGING_MARK

    folder = parent / name
    folder.mkdir()
    for file, data in files.items():
        (folder / file).write_bytes(data)
    if mark is not None:
        (folder / STAGING_MARK).write_text(json.dumps(mark))
    return folder


def killed_runs_mark(pid: int, folder: str = "rec-reconstructions") -> dict:
    return {"written_by": "dltrain-predict", "folder": folder, "host": socket.gethostname(), "pid": pid}


def test_the_next_run_removes_the_folder_a_killed_run_left_and_writes_its_images(ae_ckpt, tmp_path, monkeypatch):
    from dltrain.inference import predict_autoencoder
    from dltrain.inference.predict import predict_file
    from dltrain.inference.predict_autoencoder import MANIFEST, STAGING_MARK, ReconstructionImages

    output, folder = tmp_path / "out" / "rec.csv", tmp_path / "out" / "rec-reconstructions"
    assert predict_file(ae_ckpt, digit_pngs(tmp_path / "first", 3), output, "cpu", returns="reconstructions") == 3

    # A run killed mid-write, as its own code left it: two images, the temp file of a third, its mark.
    from PIL import Image

    dead = gone_pid()
    images = ReconstructionImages(folder)
    with monkeypatch.context() as patched:
        patched.setattr(predict_autoencoder.os, "getpid", lambda: dead)
        for i in range(2):
            images.write(f"{i}.png", Image.new("L", (8, 8)))
    left = images.staging
    (left / f".tmp-2.png.{dead}.a1b2c3d4").write_bytes(b"\x89PNG half")
    assert left.name.startswith(".rec-reconstructions-")
    assert json.loads((left / STAGING_MARK).read_text())["pid"] == dead

    assert predict_file(ae_ckpt, digit_pngs(tmp_path / "second", 5), output, "cpu", returns="reconstructions") == 5
    assert sorted(p.name for p in output.parent.iterdir()) == ["rec-reconstructions", "rec.csv"]
    assert sorted(contents(folder)) == sorted([MANIFEST, *(f"{i}.png" for i in range(5))])


def test_folders_it_cannot_prove_a_killed_run_of_its_own_left_are_left_as_they_are(ae_ckpt, tmp_path, capsys):
    from dltrain.inference.predict import predict_file

    out = tmp_path / "out"
    out.mkdir()
    png, dead = {"0.png": b"an image"}, gone_pid()
    kept = [
        staged(out, ".rec-reconstructions-nomark00", png, None),  # no mark: not known to be this tool's
        staged(out, ".rec-reconstructions-foreign0", {**png, "notes.txt": b"mine"}, killed_runs_mark(dead)),
        staged(out, ".rec-reconstructions-running0", png, killed_runs_mark(os.getpid())),  # its process still runs
        staged(out, ".rec-reconstructions-otherout", png, killed_runs_mark(dead, "other-reconstructions")),
        staged(out, ".rec-reconstructions-elsewher", png, {**killed_runs_mark(dead), "host": "another-machine"}),
        staged(out, ".rec-reconstructions-x", png, killed_runs_mark(dead)),  # not a name this tool gives
        staged(out, ".cache", png, killed_runs_mark(dead)),
    ]
    before = {folder: contents(folder) for folder in kept}

    assert predict_file(ae_ckpt, digit_pngs(tmp_path / "in", 3), out / "rec.csv", "cpu", returns="reconstructions") == 3
    assert {folder: contents(folder) for folder in kept} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f.name for f in kept), "rec-reconstructions", "rec.csv"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "left" in line]
    assert len(warnings) == 1 and ".rec-reconstructions-foreign0 (it holds notes.txt)" in warnings[0]


#: dltrain-predict, held after writing its second image (as a long input would keep it reading).
HELD = """\
import sys, time
from dltrain.inference import predict_autoencoder
write = predict_autoencoder.ReconstructionImages.write
def held(self, name, image):
    path = write(self, name, image)
    if name == "1.png":
        time.sleep(120)
    return path
predict_autoencoder.ReconstructionImages.write = held
from dltrain.inference.predict import main
main(sys.argv[1:])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_while_reading_writes_nothing_and_leaves_no_hidden_folder(ae_ckpt, tmp_path):
    from dltrain.inference.predict import predict_file

    out = tmp_path / "out"
    output, folder = out / "rec.csv", out / "rec-reconstructions"
    assert predict_file(ae_ckpt, digit_pngs(tmp_path / "first", 3), output, "cpu", returns="reconstructions") == 3
    csv, images = output.read_bytes(), contents(folder)

    args = [f"ckpt={ae_ckpt}", f"input={digit_pngs(tmp_path / 'second', 6)}", f"output={output}", "device=cpu",
            "batch_size=4", "returns=reconstructions"]
    proc = subprocess.Popen([sys.executable, "-c", HELD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        while not any((staging / "1.png").is_file() for staging in out.glob(".rec-reconstructions-*")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.splitlines() == ["dltrain-predict: stopped by SIGTERM: nothing written."] and stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["rec-reconstructions", "rec.csv"]
    assert output.read_bytes() == csv and contents(folder) == images


def test_a_stop_signal_while_the_output_is_written_waits_until_it_is():
    from dltrain.training.signals import Interrupted, StopRequest, held

    seen: list[str] = []
    # A thread that does not block the signal, as torch's own: a process-wide signal may reach it.
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        with pytest.raises(Interrupted) as stopped, StopRequest():
            with held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # time enough for the handler to run, were it let
                seen.append("written")
            seen.append("after the block")
    finally:
        done.set()
        other.join()
    assert seen == ["written"] and stopped.value.signum == signal.SIGTERM
    assert str(stopped.value) == "SIGTERM arrived while the results were written: they were written whole"


def test_a_second_signal_while_held_aborts_at_once_and_an_error_of_the_block_wins():
    from dltrain.training.signals import Interrupted, StopRequest, held

    seen: list[str] = []
    with pytest.raises(Interrupted) as stopped, StopRequest():
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("first put aside")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            seen.append("not reached")
    assert seen == ["first put aside"] and stopped.value.aborted and stopped.value.signum == signal.SIGINT

    with pytest.raises(OSError, match="disk full"), StopRequest():
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            raise OSError("disk full")
    with StopRequest():  # nothing left over from the signal put aside
        with held():
            pass


def test_a_stop_inside_a_write_leaves_no_temp_file_and_a_folder_that_stays_is_one_warning(tmp_path, capsys):
    from PIL import Image

    from dltrain.inference.predict_autoencoder import ReconstructionImages

    images = ReconstructionImages(tmp_path / "out-reconstructions")
    images.write("0.png", Image.new("L", (4, 4)))
    staging = images.staging
    # A signal inside mkstemp: the write's temp file exists, and no one holds its name.
    (staging / ".tmp-1.png.4242.ab_cd123").write_bytes(b"half")
    images.discard()
    assert not staging.exists() and images.staging is None

    images = ReconstructionImages(tmp_path / "out-reconstructions")
    images.write("0.png", Image.new("L", (4, 4)))
    staging = images.staging
    (staging / "notes.txt").write_text("someone else's")
    images.discard()  # no error over the one that ended the run
    assert sorted(p.name for p in staging.iterdir()) == ["notes.txt"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dltrain-predict: warning: could not remove {staging}"), err
    assert "it holds notes.txt, which this run did not leave there" in err[0]


def test_a_move_that_fails_takes_the_images_not_moved_away(tmp_path, monkeypatch):
    from PIL import Image

    from dltrain.inference import predict_autoencoder
    from dltrain.inference.predict_autoencoder import ReconstructionImages, replaced_when_done

    images = ReconstructionImages(tmp_path / "out-reconstructions")
    for i in range(3):
        images.write(f"{i}.png", Image.new("L", (4, 4)))
    staging, replace, moved = images.staging, predict_autoencoder.os.replace, []

    def failing(src, dst):
        if moved:
            raise OSError(28, "No space left on device")
        moved.append(dst)
        replace(src, dst)

    monkeypatch.setattr(predict_autoencoder.os, "replace", failing)
    with pytest.raises(OSError, match="No space"), replaced_when_done(type("Rows", (), {"images": images})()):
        pass
    assert not staging.exists()


def test_a_signal_put_aside_by_an_earlier_run_of_the_process_does_not_carry_over():
    from dltrain.training import signals
    from dltrain.training.signals import StopRequest, held

    signals._hold.pending = signal.SIGTERM  # as a repeat inside held()'s last lines could leave it
    with StopRequest():
        with held():
            pass
    assert signals._hold.pending is None and signals._hold.depth == 0


def test_a_mark_naming_a_pid_no_process_can_have_is_a_gone_run(tmp_path):
    from dltrain.files import _alive
    from dltrain.inference.predict_autoencoder import remove_stale_staging

    assert not _alive(2**63)  # os.kill raises OverflowError, not ProcessLookupError
    left = staged(tmp_path, ".rec-reconstructions-toolarge", {"0.png": b"an image"}, killed_runs_mark(2**40))
    assert remove_stale_staging(tmp_path / "rec-reconstructions") == [left] and not left.exists()
