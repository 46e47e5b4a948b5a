"""Review fixes around the autoencoder: start weights of the wrong kind are refused, and the test
split's noise does not depend on how it is batched."""

from __future__ import annotations

import pytest
import torch

from dltrain import compose, train
from dltrain.errors import ConfigError
from tests.test_autoencoder_transfer import FAST, autoencoder_state


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
@pytest.mark.parametrize("autoencoder", [True, False])
def test_start_weights_of_another_kind_are_one_line_naming_the_file(tmp_path, dtype, autoencoder):
    path = tmp_path / "w.pt"
    if autoencoder:
        state = autoencoder_state(path)
        state["encoder.1.weight"] = state["encoder.1.weight"].to(dtype)
    else:
        state = {"fc1.weight": torch.ones(32, 64, dtype=dtype), "fc1.bias": torch.zeros(32)}
    torch.save(state, path)
    cfg = compose(["model=mlp", "model.hidden=[32,8]", f"model.weights={path}", *FAST])
    with pytest.raises(ConfigError, match=rf"model.weights={path}: its tensors .*weight \({str(dtype)[6:]}\)"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_example_s_noise_depends_on_its_position_alone():
    from dltrain.tasks.autoencoder import corruption
    from dltrain.tasks.autoencoder_outputs import noisy_examples

    x = torch.arange(40.0).reshape(10, 4)
    for denoise in ("gaussian", "masking"):
        corrupt = corruption(denoise, 0.5)
        whole = noisy_examples(x, corrupt, 0)
        assert not torch.equal(whole, x)
        # two batches (or two ranks' shards) of the split: the same noise as one
        assert torch.equal(torch.cat([noisy_examples(x[:3], corrupt, 0), noisy_examples(x[3:], corrupt, 3)]), whole)


def test_noisy_loss_is_the_same_for_any_eval_batch_size_and_in_dltrain_eval(tmp_path):
    from dltrain.inference.evaluate import evaluate_checkpoint

    losses, summaries = [], {}
    for size in (7, 500):
        cfg = compose(["task=autoencoder", "model.hidden=[16]", "model.bottleneck=4", "task.denoise=gaussian",
                       "trainer.max_epochs=1", f"trainer.eval_batch_size={size}", "device=cpu",
                       "trainer.diagnostics=false"])
        summary = summaries[size] = train(cfg, run_dir=tmp_path / str(size))
        assert (summary["task"], summary["objective"]) == ("multiclass", "autoencoder")
        losses.append(summary["test"]["noisy_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    result = evaluate_checkpoint(tmp_path / "7" / "checkpoints" / "best.pt", device="cpu",
                                 overrides={"trainer.eval_batch_size": 11})
    assert (result["task"], result["objective"]) == ("multiclass", "autoencoder")
    assert result["metrics"]["noisy_loss"] == pytest.approx(losses[0], rel=1e-5)
    assert result["metrics"]["loss"] == pytest.approx(summaries[7]["test"]["loss"], rel=1e-5)  # run 7's checkpoint


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory):
    """An MLP autoencoder's best.pt (one batch of digits)."""
    run_dir = tmp_path_factory.mktemp("ae") / "run"
    train(compose(["task=autoencoder", "model.hidden=[16]", "model.bottleneck=4", *FAST]), run_dir=run_dir)
    return run_dir / "checkpoints" / "best.pt"


def test_reconstructions_go_only_into_a_folder_dltrain_predict_wrote(ae_ckpt, tmp_path):
    from dltrain.errors import UserError
    from dltrain.inference.predict import predict_file
    from dltrain.inference.predict_autoencoder import MANIFEST
    from tests.test_autoencoder_outputs import digit_pngs

    many, few = digit_pngs(tmp_path / "many", 12), digit_pngs(tmp_path / "few", 5)
    folder = tmp_path / "rec-reconstructions"
    folder.mkdir()
    (folder / "0.png").write_text("mine")
    with pytest.raises(UserError, match=f"holds 0.png, which dltrain-predict did not write .*{MANIFEST}"):
        predict_file(ae_ckpt, many, tmp_path / "rec.csv", "cpu", returns="reconstructions")
    assert (folder / "0.png").read_text() == "mine"
    (folder / "0.png").unlink()
    predict_file(ae_ckpt, many, tmp_path / "rec.csv", "cpu", returns="reconstructions")
    assert len(list(folder.glob("*.png"))) == 12
    # a rerun on fewer inputs leaves none of the earlier images behind
    predict_file(ae_ckpt, few, tmp_path / "rec.csv", "cpu", returns="reconstructions")
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, *(f"{i}.png" for i in range(5))])
