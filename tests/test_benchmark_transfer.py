"""benchmarks/transfer.py: the small digit set it writes, the commands it runs, the table it prints and the
README block it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.readme_results import ReadmeError
from benchmarks.transfer import (
    BEGIN,
    END,
    argument_parser,
    empty_folder,
    mean_std,
    plan,
    shown_commands,
    small_set_command,
    table,
    transfer_keys,
    validation_share,
    write_digits,
    write_readme,
)


def test_the_small_set_is_per_class_training_images_and_every_other_digit_for_testing(tmp_path: Path) -> None:
    assert write_digits(tmp_path, per_class=3) == (30, 1797 - 30)
    train = sorted(tmp_path.glob("train/*/*.png"))
    assert [p.parent.name for p in train] == [str(d) for d in range(10) for _ in range(3)]
    assert not {p.name for p in train} & {p.name for p in tmp_path.glob("test/*/*.png")}  # disjoint
    image = Image.open(train[0])
    assert (image.mode, image.size) == ("L", (28, 28))
    pixels = np.asarray(image)
    assert pixels.max() > 128 and not pixels[:4].any() and not pixels[:, -4:].any()  # white ink, MNIST's margin


def test_the_fine_tuned_and_the_scratch_runs_differ_only_in_the_transfer_keys(tmp_path: Path) -> None:
    keys = transfer_keys(tmp_path / "best.pt", freeze_epochs=3, backbone_lr=0.1)
    assert keys == [f"model.weights={tmp_path / 'best.pt'}", "model.freeze=backbone", "model.freeze_epochs=3",
                    "model.backbone_lr=0.1"]
    scratch = small_set_command(tmp_path / "digits", 15, 1, tmp_path / "a", [])
    tuned = small_set_command(tmp_path / "digits", 15, 1, tmp_path / "a", keys)
    assert [arg for arg in tuned if arg not in keys] == scratch and "seed=1" in scratch


def test_the_table_gives_each_seed_and_the_mean_and_std() -> None:
    assert mean_std([0.9, 0.8]) == "0.850 ± 0.071" and mean_std([0.5]) == "0.500 ± 0.000"
    assert table({"from scratch": [0.9, 0.8]}, [0, 1]) == [
        "| training on the small set | seed 0 | seed 1 | mean ± std |", "|---|---|---|---|",
        "| from scratch | 0.900 | 0.800 | 0.850 ± 0.071 |"]


def test_write_replaces_only_the_block_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{BEGIN}\nold\n{END}\nafter\n", encoding="utf-8")
    write_readme("new", readme)
    assert readme.read_text(encoding="utf-8") == f"before\n{BEGIN}\n\nnew\n\n{END}\nafter\n"
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ReadmeError, match="transfer_results:begin"):
        write_readme("new", readme)


def test_earlier_runs_are_never_written_over(tmp_path: Path) -> None:
    assert empty_folder(tmp_path / "new").is_dir()
    (tmp_path / "new" / "run").mkdir()
    with pytest.raises(ReadmeError, match="is not empty"):
        empty_folder(tmp_path / "new")


def test_the_readme_block_is_the_one_the_script_writes() -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    written_by = "Measured by `python -m benchmarks.transfer --mnist-root samples/mnist-8k` on "
    assert block.startswith(written_by), "README's transfer block was not written by benchmarks.transfer --write"
    rows = [line for line in block.splitlines() if line.startswith(("| fine-tuned", "| from scratch"))]
    assert len(rows) == 2 and all(" ± " in row for row in rows)
    # the commands the script builds from its defaults: changed defaults need a new --write
    fenced = block.split("```bash\n", 1)[1].split("\n```", 1)[0].splitlines()
    args = argument_parser().parse_args(["--mnist-root", "samples/mnist-8k"])
    assert fenced == shown_commands(*plan(args))
    assert rows[0].count("|") == len(args.seeds) + 3  # a column per seed, the name's and the mean's
    assert f"({args.per_class} per class, {validation_share():.0%} of them for validation)" in block
