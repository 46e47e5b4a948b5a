"""Every non-recurrent model family dltrain builds (a user's model=custom module too) exports to
every format, verified against dltrain on its test split, and the file then runs alone on raw
inputs of another batch size (slow: about 3 s an export)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dltrain import compose, train
from dltrain.export.cli import export_checkpoint
from dltrain.export.formats import load_model_file
from dltrain.export.graph import export_graph
from dltrain.export.raw import held_out
from dltrain.export.verify import reference
from dltrain.inference.restore import load_model
from tests.conftest import CHECKSUMS

pytestmark = pytest.mark.slow

FORMATS = ("onnx", "torchscript", "exported_program")
CUSTOM = "tests.nets.TinyNet"  # a user's module, named again to export and load it
#: family -> (data option, the overrides that train it)
FAMILIES = {
    "mlp": ("digits", []),
    "cnn": ("mnist", ["model=cnn"]),
    "lenet5": ("mnist", ["model=lenet5"]),
    "vgg_small": ("cifar10", ["model=vgg_small"]),
    "resnet_small": ("cifar10", ["model=resnet_small"]),
    "mnist_net": ("mnist", ["model=mnist_net"]),
    "sequential": ("mnist", ["model=sequential", "model.layers=[conv:4:3,bn,relu,maxpool:2,res:8:2,globalavg,"
                                                 "dense:6,gelu,dropout:0.1]"]),
    "image_folder_cnn": ("image_folder", ["model=cnn", "data.image_size=[12,12]"]),
    "csv_categorical": ("csv", ["data.target=Class", "data.missing=mean", "data.max_categories=2"]),
    "points_regression": ("sine", []),
    "torchvision": ("cifar10", ["model=torchvision", "model.arch=resnet18", "model.image_size=[32,32]"]),
    "custom": ("digits", ["model=custom", f"model._target_={CUSTOM}"]),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_files) -> dict[str, Path]:
    """Each family trained once (two batches), on demand: family -> its best.pt."""
    made: dict[str, Path] = {}

    def checkpoint(family: str) -> Path:
        if family not in made:
            option, overrides = FAMILIES[family]
            extra = list(data_files.overrides.get(option, []))
            if family == "torchvision":  # a state dict the test writes: nothing is downloaded
                from torchvision.models import get_model

                weights = tmp_path_factory.mktemp("weights") / "resnet18.pth"
                torch.save(get_model("resnet18", weights=None).state_dict(), weights)
                extra.append(f"model.weights={weights}")
            run = tmp_path_factory.mktemp(family) / "run"
            with pytest.MonkeyPatch.context() as patch:
                if option in CHECKSUMS:  # torchvision's MD5 sums of the generated files
                    CHECKSUMS[option](patch, data_files.root)
                train(compose(["device=cpu", "trainer.fast_dev_run=true", f"data={option}", *overrides, *extra]),
                      run_dir=run)
            made[family] = run / "checkpoints" / "best.pt"
        return made[family]

    return checkpoint


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_exports_and_verifies(checkpoints, data_overrides, family, fmt, tmp_path):
    ckpt = checkpoints(family)
    data_overrides(FAMILIES[family][0])  # the test split is read again to verify
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        folder = export_checkpoint(ckpt, fmt, output=str(tmp_path / "export"), batch_size=7, model_target=CUSTOM)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]
    assert "largest difference: " in printed.getvalue()
    # The file alone, on raw inputs of the test split in one batch (neither 7 nor the traced 3): dltrain's outputs.
    restored = load_model(ckpt, "cpu", target=CUSTOM)
    examples = held_out(restored)
    run = load_model_file(fmt, folder / card["file"])
    got = run(examples.raw.numpy())
    assert got.shape == (len(examples.raw), card["output"]["shape"][1])
    expected = reference(restored.model, examples.inputs, restored.data, batch_size=len(examples.raw))
    np.testing.assert_allclose(got, expected, atol=card["verification"]["tolerance"], rtol=0)


def test_the_pretrained_backbone_declares_its_input_in_the_graph(checkpoints):
    """ImageNet statistics, not the data's: the graph standardises with what the weights declare."""
    restored = load_model(checkpoints("torchvision"), "cpu")
    graph = export_graph(restored)
    assert graph.inputs.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406], abs=1e-6)
