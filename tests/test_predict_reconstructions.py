"""``dltrain-predict returns=reconstructions`` replaces an earlier run's images only once every
input is read: a run that fails on a bad input leaves the earlier CSV and its images as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltrain import compose, train
from dltrain.errors import UserError
from tests.test_autoencoder_outputs import digit_pngs
from tests.test_autoencoder_transfer import FAST


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory) -> Path:
    """An MLP autoencoder's best.pt (one batch of digits)."""
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    train(compose(["task=autoencoder", "model.hidden=[16]", "model.bottleneck=4", *FAST]), run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failing_rerun_leaves_the_earlier_csv_and_images(ae_ckpt, tmp_path, monkeypatch):
    from dltrain.inference import predict
    from dltrain.inference.predict import predict_file
    from dltrain.inference.predict_autoencoder import MANIFEST

    output, folder = tmp_path / "out" / "rec.csv", tmp_path / "out" / "rec-reconstructions"
    assert predict_file(ae_ckpt, digit_pngs(tmp_path / "first", 6), output, "cpu", returns="reconstructions") == 6
    csv, images = output.read_bytes(), contents(folder)
    assert sorted(images) == sorted([MANIFEST, *(f"{i}.png" for i in range(6))])

    read = predict.read_flagged_inputs

    def failing(*args):  # a bad input after two batches: their images are drawn before it is met
        batches = read(*args)
        yield next(batches)
        yield next(batches)
        raise UserError("input=second/08.png: a bad input")

    second = digit_pngs(tmp_path / "second", 9)
    with monkeypatch.context() as patched:
        patched.setattr(predict, "read_flagged_inputs", failing)
        with pytest.raises(UserError, match="a bad input"):
            predict_file(ae_ckpt, second, output, "cpu", batch_size=4, returns="reconstructions")
    assert output.read_bytes() == csv and contents(folder) == images
    assert sorted(p.name for p in output.parent.iterdir()) == ["rec-reconstructions", "rec.csv"]  # nothing left over

    # the same run without the failure replaces them all
    assert predict_file(ae_ckpt, second, output, "cpu", batch_size=4, returns="reconstructions") == 9
    assert sorted(contents(folder)) == sorted([MANIFEST, *(f"{i}.png" for i in range(9))])
    assert sorted(p.name for p in output.parent.iterdir()) == ["rec-reconstructions", "rec.csv"]
