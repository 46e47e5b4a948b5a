"""``model=torchvision`` in runs: a frozen backbone's batch-norm statistics stay as loaded, the
summary and warnings speak of torchvision's networks, a download is said and done by rank 0
first, the command line's lines for a mistyped network, and the README's commands."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dltrain import train
from dltrain.build import main_first
from dltrain.models import pretrained
from dltrain.training.checkpoint import load_checkpoint

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def resnet18_file(path: Path) -> dict[str, torch.Tensor]:
    """A resnet18 state dict with torchvision's 1000-class head and batch-norm statistics a
    training-mode pass would move (not the fresh zeros and ones)."""
    from torchvision.models import get_model

    torch.manual_seed(5)
    state = get_model("resnet18", weights=None).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.normal_(0, 0.5)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    torch.save(state, path)
    return state


def test_a_frozen_backbone_keeps_its_batch_norm_statistics_through_training(compose, tmp_path, data_overrides):
    saved = resnet18_file(tmp_path / "resnet18.pth")
    cfg = compose(["model=torchvision", f"model.weights={tmp_path / 'resnet18.pth'}", "model.image_size=[32,32]",
                   "model.freeze=backbone", "data=cifar10", *data_overrides("cifar10"), "device=cpu",
                   "trainer.max_epochs=1", "trainer.batch_size=8"])
    assert train(cfg, run_dir=tmp_path / "run")["status"] == "completed"
    trained = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    statistics = [key for key in saved if key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(statistics) == 20 * 3
    assert all(torch.equal(trained[f"net.{key}"], saved[key]) for key in statistics)
    assert not torch.equal(trained["net.layer1.0.bn1.running_mean"], torch.zeros(64))  # as loaded, not reset


def test_the_summary_and_warnings_speak_of_torchvision_networks(compose, tmp_path, data_overrides):
    cfg = compose(["model=torchvision", "data=cifar10", *data_overrides("cifar10"), "device=cpu",
                   "regularization.dropout=0.3", "trainer.fast_dev_run=true"])
    summary = train(cfg, run_dir=tmp_path / "run")
    assert "regularization.dropout=0.3 does not apply to model=torchvision: torchvision's networks keep their own " \
           "dropout and batch norm" in summary["warnings"]
    text = (tmp_path / "run" / "model_summary.txt").read_text()
    assert text.count("Init default: torchvision's own initialisation of resnet18 (") == 1
    assert "PyTorch's own" not in text


def test_a_download_is_said_with_its_url_and_folder(tmp_path, monkeypatch, caplog):
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fetched = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: fetched.append(url) or {})
    weights = ResNet18_Weights.IMAGENET1K_V1
    with caplog.at_level(logging.INFO, logger="dltrain"):
        pretrained._named_state_dict(weights, "DEFAULT", download=True)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert fetched == [weights.url]
    assert f"downloading {weights.url} into {folder}" in caplog.messages


class FakeRanks:
    """Two ranks seen from one of them: records the order of the steps and the agreements."""

    def __init__(self, main: bool, log: list[str]) -> None:
        self.is_main, self.log = main, log

    def check(self, error: BaseException | None, what: str) -> None:
        self.log.append(f"check {what}: {'failed' if error else 'ok'}")


@pytest.mark.parametrize("main", [True, False])
def test_rank_0_builds_the_model_before_the_others(main):
    log: list[str] = []
    assert main_first(FakeRanks(main, log), "building the model", lambda: log.append("build") or 7) == 7
    agreed = "check building the model: ok"
    assert log == (["build", agreed] if main else [agreed, "build"])  # the others wait for rank 0's outcome


def test_a_failed_build_on_rank_0_is_told_to_the_others():
    log: list[str] = []

    def fails():
        raise ValueError("no network")

    with pytest.raises(ValueError):
        main_first(FakeRanks(True, log), "building the model", fails)
    assert log == ["check building the model: failed"]


@pytest.mark.slow  # the close names are checked in-process (test_backbones); config errors' one line by other CLI tests
def test_a_network_name_in_capitals_names_the_network_meant(tmp_path):
    proc = run_cli(["model=torchvision", "model.arch=ResNet18"], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("dltrain: error: model.arch=ResNet18 is not a torchvision "
                                                    "classification model: the closest are resnet18, resnet152, "
                                                    "resnet101, resnet50.")


def test_a_torchvision_network_given_as_a_model_is_hinted_without_importing_torch(tmp_path):
    code = ("import sys\nfrom dltrain.cli.app import main\n"
            "for args in (['model=resnet18'], ['model=ViT_B_16'], ['model=resnet_smal']):\n"
            "    sys.argv = ['dltrain', *args]\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print('TORCH_IMPORTED' if {'torch', 'torchvision'} & set(sys.modules) else 'NO_TORCH')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "NO_TORCH", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "model=resnet18 is not a known option: did you mean model=torchvision model.arch=resnet18? " in lines[0]
    assert "did you mean model=torchvision model.arch=vit_b_16? " in lines[1]
    assert "did you mean model=resnet_small? " in lines[2]  # dltrain's own option, spelled alike


def readme_commands() -> list[str]:
    """The ``dltrain`` command lines of the README's pretrained-backbones section."""
    section = (ROOT / "README.md").read_text().split("\n### Pretrained backbones\n", 1)[1]
    section = re.split(r"\n#+ ", section, maxsplit=1)[0]
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if "dltrain " in line]


@pytest.mark.slow  # three short runs at 224x224 and 64x64
def test_the_readmes_pretrained_backbone_commands_run(compose, tmp_path, monkeypatch):
    from torchvision.models import EfficientNet_B0_Weights, get_model

    commands = readme_commands()
    assert len(commands) == 3
    monkeypatch.chdir(tmp_path)
    resnet18_file(tmp_path / "resnet18-f37072fd.pth")  # "a weights file you have"
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: pytest.fail(f"downloaded {url}"))
    for i, line in enumerate(commands):
        words = shlex.split(line)
        env = dict(word.split("=", 1) for word in words[:words.index("dltrain")])
        if "TORCH_HOME" in env:  # "torchvision's weights in a cache folder of your own": written here
            env["TORCH_HOME"] = str(tmp_path / "torch")
            cached = Path(env["TORCH_HOME"]) / "hub" / "checkpoints"
            cached.mkdir(parents=True)
            url = EfficientNet_B0_Weights.DEFAULT.url
            torch.save(get_model("efficientnet_b0", weights=None).state_dict(), cached / url.rsplit("/", 1)[1])
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        cfg = compose([*words[words.index("dltrain") + 1:], "trainer.fast_dev_run=true", "device=cpu"])
        assert train(cfg, run_dir=tmp_path / f"run{i}")["status"] == "completed", line
