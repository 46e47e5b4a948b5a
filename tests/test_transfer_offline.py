"""Pretrained backbones with no network: a torchvision weights name missing from torch's cache, with downloads
refused, is one line naming the file and the folder to put it in; a run fine-tuned from weights in the cache is
evaluated, predicted with and resumed with the cache emptied and the network cut, because the trained weights
come from the checkpoint."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, get_model, get_model_weights

from dltrain import compose, train
from dltrain.inference.evaluate import main as evaluate_main
from dltrain.inference.predict import main as predict_main
from tests.conftest import run_cli
from tests.files import write_image_folder
from tests.test_bad_input import error_line
from tests.test_predict import _agrees_with_run

#: Where torchvision keeps resnet18's DEFAULT weights, under $TORCH_HOME.
CACHED = Path("hub") / "checkpoints" / Path(ResNet18_Weights.DEFAULT.url).name
#: A resnet18 from torchvision's weights, at a small input size so that a CPU trains it in seconds.
RESNET = ["model=torchvision", "model.arch=resnet18", "model.weights=DEFAULT", "model.download=false",
          "model.image_size=[32,32]", "device=cpu"]
#: Fine-tuned on the image folder with the backbone frozen throughout: what the backbone holds at the end is
#: what it started from.
FINETUNE = [*RESNET, "model.freeze=backbone", "trainer.batch_size=8",
            "trainer.early_stopping.enabled=false"]
#: Any request a download would make goes here, where nothing listens.
NO_PROXY_ANSWERS = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def write_cached_weights(torch_home: Path, arch: str = "resnet18", weights: str = "DEFAULT") -> dict[str, torch.Tensor]:
    """A state dict of ``arch`` (seeded random weights) where torchvision looks for its ``weights``."""
    torch.manual_seed(12345)  # not a run's seed: a network a run initialises itself differs from these weights
    state = get_model(arch).state_dict()
    path = torch_home / "hub" / "checkpoints" / Path(getattr(get_model_weights(arch), weights).url).name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def conv1(ckpt: Path) -> torch.Tensor:
    """The first convolution's weights of a checkpoint's model (its key ends in ``conv1.weight``)."""
    state = torch.load(ckpt, weights_only=True)["model"]
    (key,) = [key for key in state if key.endswith("conv1.weight") and "layer" not in key]
    return state[key]


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An empty torch cache and no network for this test (local sockets, which worker processes use, still
    connect): the addresses it tried to reach."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    tried: list[str] = []
    connect = socket.socket.connect

    def refuse(address: object, *args: object, **kwargs: object) -> None:
        tried.append(repr(address))
        raise OSError("no network in this test")

    def connect_locally(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect_locally)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    yield tried
    assert not (tmp_path / "empty_torch_home" / CACHED).exists()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], list[str]]:
    """One epoch of resnet18 fine-tuned, backbone frozen, from weights in a torch cache that is removed
    afterwards: the run directory, the cached weights and the run's overrides."""
    root = tmp_path_factory.mktemp("finetuned")
    images = write_image_folder(root / "images", per_class=10, corrupt=False, strays=False)
    overrides = [*FINETUNE, "data=image_folder", f"data.path={images}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        cached = write_cached_weights(root / "torch_home")
        train(compose([*overrides, "trainer.max_epochs=1"]), run_dir=root / "run")
    shutil.rmtree(root / "torch_home")
    return root / "run", cached, overrides


def test_a_missing_weights_file_that_may_not_be_downloaded_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "torch_home"
    proc = run_cli([*RESNET, "trainer.fast_dev_run=true", "hydra.run.dir=run"], cwd=tmp_path,
                   env={"TORCH_HOME": str(home), **NO_PROXY_ANSWERS})
    line = error_line(proc)
    assert CACHED.name in line and str(home / CACHED.parent) in line and "model.download" in line, line
    assert not (home / CACHED).exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_the_run_trained_from_the_cached_weights(finetuned) -> None:
    run, cached, _ = finetuned
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    # the backbone was frozen for the run's only epoch: its first layer is the cached one, untouched
    assert torch.equal(conv1(run / "checkpoints" / "best.pt"), cached["conv1.weight"])


def test_predict_and_eval_need_neither_the_cache_nor_the_network(finetuned, offline, tmp_path) -> None:
    run, _, _ = finetuned
    best = run / "checkpoints" / "best.pt"
    out = tmp_path / "predictions.csv"
    predict_main([f"ckpt={best}", f"input={run.parent / 'images'}", f"output={out}", "device=cpu"])
    import pandas as pd

    _agrees_with_run(best, pd.read_csv(out, keep_default_na=False))
    evaluate_main([f"ckpt={best}", "device=cpu"])
    evaluated = json.loads((run / "checkpoints" / "eval.json").read_text())
    test = json.loads((run / "summary.json").read_text())["test"]
    assert evaluated["metrics"]["accuracy"] == test["accuracy"]
    assert evaluated["metrics"]["loss"] == pytest.approx(test["loss"], rel=1e-5)
    assert offline == []


def test_resume_needs_neither_the_cache_nor_the_network(finetuned, offline, tmp_path) -> None:
    run, cached, overrides = finetuned
    summary = train(compose([*overrides, "trainer.max_epochs=2", f"resume={run / 'checkpoints' / 'last.pt'}"]),
                    run_dir=tmp_path / "resumed")
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    # the model was built with no start weights; its frozen backbone holds the cached ones: the checkpoint's
    assert torch.equal(conv1(tmp_path / "resumed" / "checkpoints" / "last.pt"), cached["conv1.weight"])
    assert offline == []
