"""dltrain-predict's help lists the datasets whose inputs it reads in the order the options are
declared, and its refusal of other data points to ``dltrain.inference.load_model``."""

from __future__ import annotations

import pytest
import torch

from dltrain import compose, train
from dltrain.inference.predict import main as predict_main
from tests.conftest import tool_error

INPUTS = """\
Predict with a checkpoint, preprocessing the inputs exactly as its training data was. input is:
  data=csv          a CSV with the training feature columns (other columns are ignored)
  data=text_csv     a CSV with the training text column
  data=xor, moons, spirals, sine
                    a CSV with a header whose numeric columns are the inputs, in order (2 per row; 1 for sine)
  data=digits, mnist, fashion_mnist, cifar10, svhn, image_folder
                    a folder of images (searched recursively; hidden and non-image files skipped) or one image
The output CSV has one row per input: input (row number from 0, or image path), prediction,"""


def test_the_help_lists_the_inputs_in_the_declared_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        predict_main(["--help"])
    assert exit_.value.code == 0
    assert INPUTS in capsys.readouterr().out


def test_load_model_is_importable_from_the_inference_package():
    from dltrain.inference import load_model
    from dltrain.inference.restore import load_model as restored

    assert load_model is restored


def test_data_without_file_inputs_is_pointed_to_load_model(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose(["device=cpu", "data=sine", "trainer.fast_dev_run=true"]), run_dir=run)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state["data"]["dataset"] = "chirp"
    torch.save(state, tmp_path / "chirp.pt")
    err = tool_error(capsys, predict_main, "dltrain-predict",
                     [f"ckpt={tmp_path / 'chirp.pt'}", f"input={tmp_path}", f"output={tmp_path / 'o.csv'}"])
    assert ("dltrain-predict does not read inputs of data=chirp: it reads those of data=csv, text_csv, xor, moons, "
            "spirals, sine, digits, mnist, fashion_mnist, cifar10, svhn, image_folder; for data=chirp call the model "
            "from Python (dltrain.inference.load_model)") in err
