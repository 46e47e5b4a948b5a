"""benchmarks/learning.py: the claims' commands, what it reads from a run, its verdicts, the table it prints
and the README block it replaces."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from benchmarks.learning import (
    BEGIN,
    END,
    GRADIENTS_BEGIN,
    GRADIENTS_END,
    HEADER,
    Result,
    argument_parser,
    claims,
    command,
    gradients_text,
    main,
    lr_shows,
    overfit_verdict,
    run,
    stat,
    write_readme,
    xor_verdict,
)
from benchmarks.readme_results import ReadmeError

ROOT = Path(__file__).resolve().parents[1]


def result(accuracy: float = 0.5, val_losses: tuple[float, ...] = (1.0,), train_loss: float = 0.5,
           grads: tuple[float, float] = (1.0, 1.0)) -> Result:
    """A run's result as read from its files: one epoch row per validation loss, one diagnostics epoch."""
    epochs = [{"val_loss": str(v), "train_loss": str(train_loss), "epoch_seconds": "0.5"} for v in val_losses]
    layers = {"fc1": {"grad_norm": str(grads[0])}, "out": {"grad_norm": str(grads[1])}}
    return Result({"status": "completed", "test": {"accuracy": accuracy}}, epochs, {1: layers})


def test_a_claim_s_commands_differ_only_in_what_it_compares() -> None:
    everything = claims()
    assert list(everything) == ["xor", "zero_init", "vanishing", "lr", "overfit", "batch"]
    xor = everything["xor"].variants
    assert [command(v, []) for v in xor.values()] == ["dltrain experiment=xor 'model.hidden=[]'",
                                                       "dltrain experiment=xor"]
    lr = [set(v) for v in everything["lr"].variants.values()]
    assert [sorted(v - set.intersection(*lr)) for v in lr] == [["optim.lr=0.0001"], ["optim.lr=0.1"],
                                                                ["optim.lr=100"]]
    overfit = everything["overfit"].variants
    assert [sorted(set(v) - set(overfit["none"])) for v in overfit.values()] == [
        [], ["regularization.dropout=0.5"], ["regularization.l2=0.01"]]


def test_what_is_read_from_a_run() -> None:
    run = result(val_losses=(1.0, 0.8, 0.9, 0.7, 0.75), train_loss=0.25, grads=(2e-5, 0.5))
    assert run.rises() == 2 and run.last("train_loss") == 0.25 and run.epoch_seconds() == 0.5
    assert run.grad_ratio() == pytest.approx(4e-5) and run.test() == 0.5 and not run.diverged
    assert stat([0.9, 0.8]) == "0.850 ± 0.071" and stat([0.5]) == "0.500 (n=1)"
    assert stat([3e-5, 5e-5], ".1e") == "4.0e-05 ± 1.4e-05"
    unmeasured = Result({"run_dir": "outputs/x"}, run.epochs, {})
    with pytest.raises(ReadmeError, match="outputs/x has no diagnostics.csv: .* trainer.diagnostics on"):
        unmeasured.grad_ratio()


def test_a_verdict_says_whether_the_runs_show_the_claim() -> None:
    linear, hidden = [result(0.75), result(0.70)], [result(1.0), result(0.98)]
    assert xor_verdict({"linear": linear, "hidden": hidden})[0]
    assert not xor_verdict({"linear": hidden, "hidden": linear})[0]
    overfits, tight = result(val_losses=(1.0,), train_loss=0.1), result(val_losses=(0.4,), train_loss=0.3)
    assert overfit_verdict({"none": [overfits], "dropout": [tight], "l2": [tight]})[0]
    assert not overfit_verdict({"none": [overfits], "dropout": [tight], "l2": [overfits]})[0]


def diagnosed(layers: dict[str, dict[str, str]], epochs: int = 2) -> Result:
    """A run whose diagnostics.csv holds ``layers`` (name -> column -> value) in each of ``epochs`` epochs."""
    return Result({"status": "completed"}, [], {e: layers for e in range(1, epochs + 1)})


def test_what_the_diagnostics_show_is_read_from_them() -> None:
    def linear(grad: float, ratio: str = "1e-06") -> dict[str, str]:
        return {"grad_norm": str(grad), "update_ratio": ratio, "saturated_fraction": "", "dead_fraction": ""}

    def activation(column: str, value: float) -> dict[str, str]:
        return {"grad_norm": "", "update_ratio": "", "saturated_fraction": "", "dead_fraction": "", column: str(value)}

    sigmoid = diagnosed({"fc1": linear(1e-5), "act1": activation("saturated_fraction", 0), "fc2": linear(1e-4),
                         "fc3": linear(5e-4, "3e-06"), "out": linear(0.4, "0.02")})
    relu = [diagnosed({"fc1": linear(0.5), "act1": activation("dead_fraction", f), "out": linear(2.0, "nan")})
            for f in (0.1, 0.25)]
    lr = {"low": [diagnosed({"fc1": linear(1, "2e-06")})], "high": [diagnosed({"fc1": linear(1, "5")})]}
    text = gradients_text({"sigmoid": [sigmoid], "relu": relu}, lr)
    assert text.startswith("Read by `python -m benchmarks.learning` from the runs' `diagnostics.csv`")
    assert "falls from 0.4 at `out` to 1e-05 at `fc1`, each layer 5.0 to 800.0 times below the one after it" in text
    assert "the update ratios of `fc1`, `fc2`, `fc3` reach at most 3e-06, and none of its units saturates" in text
    assert "ReLU network's gradient norms lie between 0.5 and 2 in every layer and epoch" in text
    assert "with at most 25% of its units dead" in text
    sigmoid.diagnostics[2]["act1"] = activation("saturated_fraction", 0.0024)
    assert "and at most 0.24% of its units saturate" in gradients_text({"sigmoid": [sigmoid], "relu": relu})
    assert text.endswith("2e-06 to 2e-06 at `optim.lr=0.0001`; 5 to 5 at `optim.lr=100`.")


def test_write_replaces_only_the_block_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{BEGIN}\nold\n{END}\nafter\n", encoding="utf-8")
    write_readme("new", readme)
    assert readme.read_text(encoding="utf-8") == f"before\n{BEGIN}\n\nnew\n\n{END}\nafter\n"
    readme.write_text(f"{BEGIN}\nold\n{END}\n{GRADIENTS_BEGIN}\nold\n{GRADIENTS_END}\n", encoding="utf-8")
    write_readme("table", readme, gradients="paragraph")
    assert readme.read_text(encoding="utf-8") == (f"{BEGIN}\n\ntable\n\n{END}\n"
                                                  f"{GRADIENTS_BEGIN}\n\nparagraph\n\n{GRADIENTS_END}\n")
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ReadmeError, match="learning_results:begin"):
        write_readme("new", readme)
    readme.write_text(f"{BEGIN}\n{END}\n", encoding="utf-8")
    with pytest.raises(ReadmeError, match="learning_gradients:begin"):
        write_readme("new", readme, gradients="paragraph")


def test_a_diverged_run_is_a_result_with_its_one_line(tmp_path: Path) -> None:
    high = run(["optim=sgd", "optim.lr=100", "trainer.max_epochs=1", "device=cpu"], tmp_path / "run")
    assert high.diverged and high.error.startswith("the training loss became nan in epoch 1 at step ")
    assert lr_shows([high]) == f"status diverged in 1 of 1: {high.error}"


@pytest.mark.slow
def test_the_script_runs_and_judges_claims_on_a_tiny_config(tmp_path: Path, capsys) -> None:
    # one epoch: lr=100 diverges within it (a result, not an error), 1e-4 and 0.1 train
    assert main(["--dir", str(tmp_path / "runs"), "--seeds", "0", "--only", "lr",
                 "--extra", "trainer.max_epochs=1"]) == 0
    table = capsys.readouterr().out.split(f"{HEADER}\n|---|---|---|---|\n", 1)[1].splitlines()
    assert len(table) == 3 and table[0].startswith("| a learning rate too low crawls")
    assert "`dltrain optim=sgd trainer.max_epochs=10 optim.lr=100 trainer.max_epochs=1`" in table[2]
    assert "status diverged in 1 of 1: the training loss became nan in epoch 1" in table[2]
    assert re.search(r"\| (NOT )?shown: ", table[0])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lr-good-seed0", "lr-high-seed0",
                                                                     "lr-low-seed0"]


def test_earlier_runs_are_never_written_over(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ReadmeError, match="is not empty"):
        main(["--dir", str(tmp_path), "--only", "xor"])


def test_the_readme_block_is_the_one_the_script_writes() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert block.startswith("Measured by `python -m benchmarks.learning` on "), \
        "README's learning block was not written by benchmarks.learning --write"
    args = argument_parser().parse_args([])
    assert f"each command run with `seed={'`, `seed='.join(map(str, args.seeds))}`." in block
    rows = block.split(f"{HEADER}\n|---|---|---|---|\n", 1)[1].splitlines()
    # the commands the script builds from its defaults, in order: changed claims need a new --write
    commands = [row.split(" | ")[1].strip("`") for row in rows]
    assert commands == [command(v, args.extra) for claim in claims().values() for v in claim.variants.values()]
    verdicts = [row.rsplit(" | ", 1)[1] for row in rows if not row.startswith("|  |")]
    assert len(verdicts) == len(claims()) and all(v.startswith("shown: ") for v in verdicts)
    gradients = text[text.index(GRADIENTS_BEGIN) + len(GRADIENTS_BEGIN):text.index(GRADIENTS_END)].strip()
    assert gradients.startswith("Read by `python -m benchmarks.learning` from the runs' `diagnostics.csv`"), \
        "README's paragraph of what the diagnostics show was not written by benchmarks.learning --write"


@pytest.mark.slow
def test_every_command_composes_as_written() -> None:
    from dltrain import compose  # composes and validates only: nothing is trained

    for claim in claims().values():
        for overrides in claim.variants.values():
            compose(shlex.split(command(overrides, []))[1:])
