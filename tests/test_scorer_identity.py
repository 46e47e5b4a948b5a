"""A GAN's ``task.scorer`` is identified by its content: the checkpoints record the file's SHA-256,
a resume whose scorer changed since the run started is refused in one line before anything is
written, ``dltrain-eval`` leaves the sample score out and says why, and a checkpoint written
before the SHA-256 was recorded still resumes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dltrain import compose, train
from dltrain.errors import ConfigError
from dltrain.tasks.base import BadTaskState
from dltrain.tasks.gan_state import SCORER_SHA256, checked_sha256
from dltrain.training.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import run_cli

#: A small DCGAN on data=digits (8x8) with its sample score: about a second an epoch.
GAN = ["task=gan", "data=digits", "device=cpu", "trainer.batch_size=32", "trainer.limit_train_batches=2",
       "trainer.limit_val_batches=1", "trainer.diagnostics=false", "task.num_samples=10", "task.score_samples=100",
       "model.latent_size=16", "model.generator.channels=[16,8]", "model.discriminator.channels=[8,16]"]


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``scorer/`` (a digits classifier, a few batches) and ``first/``, one epoch
    of a GAN scored by its ``best.pt``."""
    folder = tmp_path_factory.mktemp("identity")
    train(compose(["data=digits", "model=cnn", "trainer.max_epochs=1", "trainer.batch_size=64",
                   "trainer.limit_train_batches=3", "trainer.diagnostics=false", "device=cpu"]),
          run_dir=folder / "scorer")
    train(compose([*GAN, f"task.scorer={scorer_file(folder)}", "trainer.max_epochs=1"]), run_dir=folder / "first")
    return folder


def scorer_file(folder: Path) -> Path:
    return folder / "scorer" / "checkpoints" / "best.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def replaced_scorer(folder: Path) -> Iterator[str]:
    """The scorer file replaced by a valid classifier of other weights (one weight changed), its
    original bytes put back afterwards; yields the new file's SHA-256."""
    path = scorer_file(folder)
    original = path.read_bytes()
    state = load_checkpoint(path)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 0.5
    save_checkpoint(state, path)
    try:
        yield sha256(path)
    finally:
        path.write_bytes(original)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def gan(folder: Path, *overrides: str) -> list[str]:
    return [*GAN, f"task.scorer={scorer_file(folder)}", "trainer.max_epochs=2", *overrides]


def test_the_checkpoints_record_the_scorer_file_s_sha256(started: Path) -> None:
    digest = sha256(scorer_file(started))
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(started / "first" / "checkpoints" / name)["task"][SCORER_SHA256] == digest


def test_a_resume_whose_scorer_changed_is_one_line_and_leaves_the_run_as_it_was(started: Path) -> None:
    """From the command line (a new directory) and in place (``resume=auto`` in the run's own
    directory): refused before anything is written, the first run's files byte for byte as they were."""
    before = files(started / "first")
    recorded = sha256(scorer_file(started))
    with replaced_scorer(started) as now:
        proc = run_cli([*gan(started, f"resume={started / 'first' / 'checkpoints' / 'last.pt'}"),
                        "hydra.run.dir=resumed"], cwd=started)
        expected = (f"task.scorer={scorer_file(started)} changed since the run started (sha256 {recorded[:12]}... "
                    f"recorded, {now[:12]}... now), so its scores would not compare with the run's: put the "
                    "original file back to resume this run, or give the new scorer to a new run (without resume=).")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == f"dltrain: error: {expected}"
        with pytest.raises(ConfigError) as err:
            train(compose(gan(started, "resume=auto")), run_dir=started / "first")
        assert str(err.value) == expected
    assert files(started / "first") == before
    assert not (started / "resumed" / "metrics.csv").exists()


def test_a_scorer_replaced_by_a_file_that_is_no_checkpoint_is_the_same_line(started: Path, tmp_path: Path) -> None:
    """Compared before the file is loaded: what changed is said, not what the new file lacks."""
    path = scorer_file(started)
    original, recorded = path.read_bytes(), sha256(path)
    path.write_bytes(b"not a checkpoint")
    try:
        with pytest.raises(ConfigError) as err:
            train(compose(gan(started, f"resume={started / 'first' / 'checkpoints' / 'last.pt'}")),
                  run_dir=tmp_path / "resumed")
    finally:
        path.write_bytes(original)
    now = hashlib.sha256(b"not a checkpoint").hexdigest()
    assert str(err.value).startswith(f"task.scorer={path} changed since the run started (sha256 {recorded[:12]}... "
                                     f"recorded, {now[:12]}... now)")


def test_dltrain_eval_of_a_changed_scorer_gives_the_losses_and_says_why(started: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from dltrain.inference.evaluate import evaluate_checkpoint

    recorded = sha256(scorer_file(started))
    with replaced_scorer(started) as now:
        metrics = evaluate_checkpoint(started / "first" / "checkpoints" / "best.pt", device="cpu")["metrics"]
    assert f"dltrain-eval: warning: task.scorer={scorer_file(started)} changed since the run started (sha256 " \
           f"{recorded[:12]}... recorded, {now[:12]}... now), so its scores would not compare with the run's: no " \
           "sample score, the losses and D's outputs only (put the original file back to score the samples)\n" \
           in capsys.readouterr().err
    assert "loss" in metrics and not any(name.startswith("sample_") for name in metrics)


def test_dltrain_eval_of_a_damaged_record_gives_the_losses_and_says_why(started: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from dltrain.inference.evaluate import evaluate_checkpoint

    state = load_checkpoint(started / "first" / "checkpoints" / "best.pt")
    state["task"][SCORER_SHA256] = "crafted"
    save_checkpoint(state, tmp_path / "crafted" / "checkpoints" / "best.pt")
    metrics = evaluate_checkpoint(tmp_path / "crafted" / "checkpoints" / "best.pt", device="cpu")["metrics"]
    assert "dltrain-eval: warning: the checkpoint's scorer's SHA-256 (task=gan's) is str 'crafted', not 64 hex " \
           f"digits, so task.scorer={scorer_file(started)} cannot be told to be the run's scorer: no sample score, " \
           "the losses and D's outputs only\n" in capsys.readouterr().err
    assert "loss" in metrics and not any(name.startswith("sample_") for name in metrics)


def test_a_checkpoint_written_before_the_sha256_was_recorded_resumes_and_records_it(started: Path,
                                                                                    tmp_path: Path) -> None:
    """Nothing recorded: nothing to compare, even with another scorer's file; the resumed run's
    checkpoints record the file it scores with from then on."""
    state = load_checkpoint(started / "first" / "checkpoints" / "last.pt")
    del state["task"][SCORER_SHA256]
    save_checkpoint(state, tmp_path / "old" / "checkpoints" / "last.pt")
    with replaced_scorer(started) as now:
        summary = train(compose(gan(started, f"resume={tmp_path / 'old' / 'checkpoints' / 'last.pt'}")),
                        run_dir=tmp_path / "resumed")
        assert summary["status"] == "completed" and summary["epochs_run"] == 2
        assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["task"][SCORER_SHA256] == now


def test_a_resume_of_a_recorded_sha256_that_is_no_hex_digest_is_one_line(started: Path, tmp_path: Path) -> None:
    state = load_checkpoint(started / "first" / "checkpoints" / "last.pt")
    state["task"][SCORER_SHA256] = "crafted\nlines"
    save_checkpoint(state, tmp_path / "old" / "checkpoints" / "last.pt")
    with pytest.raises(ConfigError) as err:
        train(compose(gan(started, f"resume={tmp_path / 'old' / 'checkpoints' / 'last.pt'}")),
              run_dir=tmp_path / "resumed")
    assert str(err.value) == (f"resume={tmp_path / 'old' / 'checkpoints' / 'last.pt'}: the checkpoint's scorer's "
                              "SHA-256 (task=gan's) is str 'crafted\\nlines', not 64 hex digits: resume a checkpoint "
                              "dltrain wrote, or train a new run")
    assert not (tmp_path / "resumed").exists()  # refused before the run directory's first file


@pytest.mark.parametrize("entry", [5, "abc", "A" * 64, b"0" * 64])
def test_a_recorded_sha256_that_is_no_hex_digest_is_refused(entry: object) -> None:
    with pytest.raises(BadTaskState, match=r"^scorer's SHA-256 \(task=gan's\) is \w+ .*, not 64 hex digits$"):
        checked_sha256(entry)
    assert checked_sha256(None) is None and checked_sha256("0" * 64) == "0" * 64
