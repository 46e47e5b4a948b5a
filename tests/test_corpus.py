"""The bad-input corpus: every bad input dltrain has learned to refuse, in one table, through
the three console scripts.

Each entry writes its files into a fresh folder and gives the arguments of ``dltrain``,
``dltrain-eval`` or ``dltrain-predict``. The tool must end with exactly one line on stderr,
``<tool>: error: ...``, holding the entry's fragments, exit with code 2 (or the entry's
code), print no traceback, and leave every file that was there before byte-identical
(the entry's own files and the shared finished runs alike).

The tools run in this process: ``dltrain`` through its console script's own entry point
(Hydra's argument parsing and composition, the run-start checks and the error boundary) with
``sys.argv`` set, the other two through ``main(argv)``. A disk that refuses writes is simulated
where it cannot be made. A new bad input is one more entry; the whole corpus takes about half
a minute on two cores, nearly all of it Hydra composing ``dltrain``'s config once per entry.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import logging_restored
from tests.files import write_csv, write_image_folder, write_mnist, write_table_csv, write_text_csv

TOOLS = ("dltrain", "dltrain-eval", "dltrain-predict")
NO_CUDA = not torch.cuda.is_available()


@dataclass(frozen=True)
class Runs:
    """Finished runs the checkpoint entries start from, trained once for the module.

    Attributes:
        root: the folder holding everything below (checked untouched after each entry).
        digits: the run directory of a ``fast_dev_run`` on ``data=digits`` (an MLP).
        table: a CSV file of 60 rows with string labels in ``Class`` and 3 gaps in ``age`` and ``city``.
        csv: the run directory of a ``fast_dev_run`` on ``table`` (``data.missing=mean``).
    """

    root: Path
    digits: Path
    table: Path
    csv: Path

    @property
    def best(self) -> Path:
        """The digits run's ``best.pt``."""
        return self.digits / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    from dltrain import compose, train

    root = tmp_path_factory.mktemp("corpus_runs")
    table = write_table_csv(root / "table.csv", rows=60, target="Class", missing=3)
    train(compose(["device=cpu", "trainer.fast_dev_run=true"]), run_dir=root / "digits")
    train(compose(["device=cpu", "trainer.fast_dev_run=true", "data=csv", f"data.path={table}", "data.target=Class",
                   "data.missing=mean"]), run_dir=root / "csv")
    return Runs(root, root / "digits", table, root / "csv")


#: ``build(folder, runs) -> argv``: writes what the entry needs into ``folder`` (the working directory).
Build = Callable[[Path, Runs], list[str]]


@dataclass(frozen=True)
class Bad:
    """One bad input.

    Attributes:
        tool: the console script it is given to.
        build: writes its files and returns the arguments.
        expected: fragments of the one error line.
        code: the exit code.
        machine: simulates, through ``monkeypatch``, a machine that behaves otherwise (a disk
            that refuses writes), where the real thing cannot be made in a test.
    """

    tool: str
    build: Build
    expected: tuple[str, ...]
    code: int = 2
    machine: Callable[[pytest.MonkeyPatch], None] | None = None


def bad(name: str, tool: str, build: Build | list[str], *expected: str, code: int = 2,
        machine: Callable[[pytest.MonkeyPatch], None] | None = None,
        marks: tuple[pytest.MarkDecorator, ...] = ()) -> object:
    """A corpus entry named ``name``; ``build`` may be the arguments themselves, for an entry
    that needs no files."""
    if isinstance(build, list):
        argv = build
        build = lambda folder, runs: list(argv)  # noqa: E731
    return pytest.param(Bad(tool, build, expected, code, machine), id=name, marks=marks)


# --- builders -----------------------------------------------------------------------------------------------------


class _CreatesFile:
    """Unpickling this creates the file ``target``: what a malicious pickle does."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _edited(runs: Runs, folder: Path, edit: Callable[[dict], object], name: str = "edited.pt",
            source: Path | None = None) -> Path:
    """A copy of a checkpoint (the digits run's best.pt by default) changed by ``edit(state)``."""
    state = torch.load(source or runs.best, weights_only=True)
    edit(state)
    torch.save(state, folder / name)
    return folder / name


def _truncated(folder: Path, runs: Runs) -> Path:
    whole = runs.best.read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    return folder / "truncated.pt"


def _evil(folder: Path) -> Path:
    """A checkpoint whose pickle would create ``folder/pwned`` (which the check then looks for)."""
    torch.save({"model": {}, "payload": _CreatesFile(str(folder / "pwned"))}, folder / "evil.pt")
    return folder / "evil.pt"


def _weights_only(folder: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}}, folder / "weights.pt")
    return folder / "weights.pt"


def _one_weight_less(state: dict) -> None:
    state["model"].pop(next(iter(state["model"])))


def _nan_weight(state: dict) -> None:
    state["model"]["fc1.weight"] = torch.full_like(state["model"]["fc1.weight"], float("nan"))


def _weird_task(state: dict) -> None:
    state["data"]["task"] = "weird"


def _huge_input(state: dict) -> None:
    state["data"].update(input_shape=[1, 100000, 100000], image_size=[100000, 100000])


def _member_start(raw: bytes, member: zipfile.ZipInfo) -> int:
    """Where the bytes of an archive member start (after its local header)."""
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26:member.header_offset + 30])
    return member.header_offset + 30 + name_length + extra_length


def _bit_rotted(folder: Path, runs: Runs) -> Path:
    """The digits run's last.pt with one bit flipped in its largest tensor (torch.load alone takes it)."""
    source = runs.digits / "checkpoints" / "last.pt"
    with zipfile.ZipFile(source) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(source.read_bytes())
    raw[_member_start(raw, member) + member.file_size // 2] ^= 0x10
    (folder / "rotten.pt").write_bytes(raw)
    return folder / "rotten.pt"


def _broken_header(folder: Path, runs: Runs) -> Path:
    """The digits run's best.pt with the signature of a tensor's local header overwritten."""
    with zipfile.ZipFile(runs.best) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename)
    raw = bytearray(runs.best.read_bytes())
    raw[member.header_offset] ^= 0xFF
    (folder / "broken.pt").write_bytes(raw)
    return folder / "broken.pt"


def _copy_run(folder: Path, runs: Runs) -> Path:
    """A copy of the finished digits run, at ``folder/old``."""
    return Path(shutil.copytree(runs.digits, folder / "old"))


def _csv(folder: Path, columns: dict, name: str = "table.csv") -> Path:
    return write_csv(folder / name, columns)


def _table(folder: Path, **kwargs: object) -> Path:
    return write_table_csv(folder / "table.csv", rows=60, **kwargs)


def _image_folder(folder: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 4) -> Path:
    return write_image_folder(folder / "images", classes=classes, per_class=per_class, corrupt=False, strays=False)


def _empty_class_folders(folder: Path) -> Path:
    for name in ("cat", "dog"):
        (folder / "images" / name).mkdir(parents=True)
        (folder / "images" / name / "notes.txt").write_text("no images here")
    return folder / "images"


def _csv_text(text: str) -> Build:
    """``data=csv`` reading a file that holds ``text``."""
    def build(folder: Path, runs: Runs) -> list[str]:
        (folder / "data.csv").write_text(text)
        return ["data=csv", f"data.path={folder / 'data.csv'}", RUN_DIR]

    return build


def _latin1(folder: Path) -> Path:
    (folder / "latin1.csv").write_bytes("a,b\nété,1\nça,2\n".encode("latin-1"))
    return folder / "latin1.csv"


def _texts_without_labels(folder: Path) -> Path:
    table = pd.DataFrame({"text": [f"text {i}" for i in range(20)], "label": ["neg", "pos"] * 10})
    table.loc[[3, 5], "label"] = None
    return write_csv(folder / "texts.csv", table)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _old_sweep(folder: Path) -> Path:
    """A sweep directory that holds a finished job."""
    (folder / "S" / "0").mkdir(parents=True)
    (folder / "S" / "0" / "metrics.csv").write_text("epoch\n1\n")
    (folder / "S" / "0" / "summary.json").write_text('{"status": "completed"}')
    return folder / "S"


def _ckpt_entries(tool: str, extra: Callable[[Path], list[str]]) -> list:
    """The broken checkpoints, given to ``tool`` (``extra(folder)``: its other arguments)."""
    return [
        bad(f"{tool}-ckpt-missing", tool, lambda f, r: [f"ckpt={f / 'nope.pt'}", *extra(f)], "nope.pt does not exist"),
        bad(f"{tool}-ckpt-a-directory", tool, lambda f, r: [f"ckpt={f}", *extra(f)], "is a directory: pass the file"),
        bad(f"{tool}-ckpt-truncated", tool, lambda f, r: [f"ckpt={_truncated(f, r)}", *extra(f)], "cannot be loaded"),
        bad(f"{tool}-ckpt-pickled-code", tool, lambda f, r: [f"ckpt={_evil(f)}", *extra(f)], "refused"),
        bad(f"{tool}-ckpt-weights-only", tool, lambda f, r: [f"ckpt={_weights_only(f)}", *extra(f)],
            "has no config, model_spec, data"),
        bad(f"{tool}-ckpt-weight-removed", tool, lambda f, r: [f"ckpt={_edited(r, f, _one_weight_less)}", *extra(f)],
            "do not fit the model its config describes (missing "),
        bad(f"{tool}-ckpt-bit-rot", tool, lambda f, r: [f"ckpt={_bit_rotted(f, r)}", *extra(f)],
            "is damaged (member", "fails its checksum"),
        bad(f"{tool}-ckpt-broken-member-header", tool, lambda f, r: [f"ckpt={_broken_header(f, r)}", *extra(f)],
            "is damaged (member", "cannot be read"),
        bad(f"{tool}-ckpt-nan-weights", tool, lambda f, r: [f"ckpt={_edited(r, f, _nan_weight)}", *extra(f)],
            "its weights hold NaN or infinite values (fc1.weight)"),
        bad(f"{tool}-ckpt-huge-input-shape", tool, lambda f, r: [f"ckpt={_edited(r, f, _huge_input)}", *extra(f)],
            "its input shape [1, 100000, 100000] (image size [100000, 100000]) is not one dltrain trains on"),
    ]


def _points(folder: Path) -> list[str]:
    return [f"input={_csv(folder, {'x': [0.0, 1.0]}, 'points.csv')}", f"output={folder / 'out.csv'}"]


def _wider(folder: Path, runs: Runs) -> Path:
    return write_csv(folder / "wider.csv", pd.read_csv(runs.table).assign(extra=1.0))


def _no_score(folder: Path, runs: Runs) -> Path:
    return write_csv(folder / "no_score.csv", pd.read_csv(runs.table).drop(columns="score"))


def _trained_with_drop(state: dict) -> None:
    state["data"]["missing"] = "drop"  # as a run with data.missing=drop records it


def _chirp(state: dict) -> None:
    state["data"]["dataset"] = "chirp"


def _numbers(rows: int = 100) -> pd.DataFrame:
    """Numeric features ``x`` and ``z`` and a 0/1 target ``y`` that depends on ``x``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=rows).round(3)
    return pd.DataFrame({"x": x, "z": rng.normal(size=rows).round(3), "y": (x > 0).astype(int)})


def _numbers_csv(folder: Path, name: str = "t.csv", rows: int = 100, **columns: object) -> Path:
    """:func:`_numbers` with some columns replaced or added (``column=values``), as a CSV file."""
    return write_csv(folder / name, _numbers(rows).astype(object).assign(**columns))


def _with_cells(column: list[object], cells: dict[int, object]) -> list[object]:
    return [cells.get(i, value) for i, value in enumerate(column)]


def _csv_lines(folder: Path, header: str, rows: int) -> Path:
    """A CSV file of ``header`` and ``rows`` rows of small integers, one a column."""
    width = header.count(",") + 1
    lines = [header] + [",".join(str((i + j) % 3) for j in range(width)) for i in range(rows)]
    (folder / "t.csv").write_text("\n".join(lines) + "\n")
    return folder / "t.csv"


def _table_with_cell(folder: Path, runs: Runs, row: int, cell: str) -> Path:
    """The shared table with one ``age`` cell replaced (gaps filled, so only that cell is odd)."""
    table = pd.read_csv(runs.table).fillna({"age": 40.0, "city": "rome"}).astype({"age": object})
    table.loc[row, "age"] = cell
    return write_csv(folder / "new.csv", table)


def _texts(folder: Path, texts: list[str]) -> Path:
    """A text_csv file of ``texts`` labelled a, b, a, ..."""
    return write_csv(folder / "texts.csv", {"text": texts, "label": ["a", "b"] * (len(texts) // 2)})


def _user_table(folder: Path) -> Path:
    """A CSV file of the user's (not a predictions file)."""
    (folder / "train.csv").write_text("x1,x2,label\n1,2,a\n")
    return folder / "train.csv"


def _user_files(folder: Path) -> Path:
    """A folder of the user's that holds files named as a run's results."""
    (folder / "mine").mkdir()
    for name in ("predictions.csv", "data.json", "summary.json"):
        (folder / "mine" / name).write_text(f"the user's {name}\n")
    return folder / "mine"


def _copy_ckpt(folder: Path, runs: Runs) -> Path:
    return Path(shutil.copy(runs.csv / "checkpoints" / "best.pt", folder / "best.pt"))


def _copy_table(folder: Path, runs: Runs) -> Path:
    return Path(shutil.copy(runs.table, folder / "table.csv"))


#: Crafted ``model`` nodes: the code runs (and creates ``pwned``) if the target is ever called or imported.
EVIL_MODELS = {
    "os.system": {"name": "custom", "_target_": "os.system", "command": "id > pwned"},
    "subprocess.getoutput": {"name": "custom", "_target_": "subprocess.getoutput", "cmd": "id > pwned"},
    "corpus_evil_module.Net": {"name": "custom", "_target_": "corpus_evil_module.Net"},
}


def _crafted(folder: Path, runs: Runs, key: str, value: object, **top: object) -> Path:
    """The digits run's best.pt with the dotted ``key`` of its stored config set to ``value`` (and
    top-level config keys ``top``), beside a module whose top-level code would create ``pwned``."""
    (folder / "corpus_evil_module.py").write_text('open("pwned", "w").write("top-level code ran")\n')

    def edit(state: dict) -> None:
        *parents, last = key.split(".")
        node = state["config"]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        state["config"].update(top)

    return _edited(runs, folder, edit, name="evil.pt")


def _trust_entries(tool: str, ckpt_key: str, extra: Callable[[Path], list[str]]) -> list:
    """Checkpoints whose stored config names code, given to ``tool`` as ``ckpt_key=``."""
    named = "model=custom model._target_=" if tool == "dltrain" else "model._target_="
    entries = [
        bad(f"{tool}-stored-target-{target}", tool,
            lambda f, r, node=node: [f"{ckpt_key}={_crafted(f, r, 'model', node)}", *extra(f)],
            f"was trained with model=custom model._target_={target}, which would import and run that code",
            f"name it on the command line ({named}{target}) or pass trust_code=true")
        for target, node in EVIL_MODELS.items()]
    return [
        *entries,
        bad(f"{tool}-stored-trust-code", tool,
            lambda f, r: [f"{ckpt_key}={_crafted(f, r, 'model', EVIL_MODELS['os.system'], trust_code=True)}",
                          *extra(f)], "pass trust_code=true"),
        bad(f"{tool}-stored-power-tower", tool,
            lambda f, r: [f"{ckpt_key}={_crafted(f, r, 'data', {'name': 'sine', 'function': '9**9**9'})}", *extra(f)],
            "data.function=9**9**9, which is not an allowed expression"),
        bad(f"{tool}-stored-optim-target", tool,
            lambda f, r: [f"{ckpt_key}={_crafted(f, r, 'optim._target_', 'os.system')}", *extra(f)],
            "its config sets optim._target_=os.system, which names code to run"),
    ]


def _user_note(folder: Path) -> Path:
    (folder / "notes.txt").write_text("mine\n")
    return folder / "notes.txt"


def _full_disk(folder: Path) -> Path:
    """A folder whose files are /dev/full, which answers every write with ENOSPC."""
    (folder / "full").mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / "full" / name).symlink_to("/dev/full")
    return folder / "full"


def _config_dir(folder: Path, name: str, text: str) -> list[str]:
    """``--config-dir`` arguments for a folder of the user's that holds ``model/<name>.yaml``."""
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "conf" / "model" / f"{name}.yaml").write_text(text)
    return ["--config-dir", str(folder / "conf"), f"model={name}"]


def _read_only_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders named ``locked`` (and below) cannot be created: a read-only filesystem, which
    root (who ignores permissions) cannot otherwise be shown."""
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        if "locked" in self.parts:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)


def _full_disk_for_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json meets a full disk (the run's other files do not)."""
    import dltrain.report.summary

    real_write_json = dltrain.report.summary.write_json

    def full(path: Path, obj: object) -> None:
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_json(path, obj)

    monkeypatch.setattr(dltrain.report.summary, "write_json", full)


def _test_split_only(folder: Path) -> Path:
    """An image folder with a test/ split and no train/ one."""
    write_image_folder(folder / "images" / "test", classes=("cat", "dog"), per_class=2, corrupt=False, strays=False)
    return folder / "images"


def _broken_mnist(folder: Path) -> Path:
    """A data.root whose MNIST training images are two bytes."""
    raw = write_mnist(folder / "mn")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    return folder / "mn"


def _table_run_with_missing_error(state: dict) -> None:
    state["data"]["missing"] = "error"  # as a run with data.missing=error records it


# --- the corpus ---------------------------------------------------------------------------------------------------

RUN_DIR = "hydra.run.dir=run"

CONFIG = [  # composition and validation: stopped before any run directory exists
    bad("unknown-key", "dltrain", ["optim.lrr=0.1"], "optim.lrr is not a config key", "did you mean optim.lr=0.1?"),
    bad("unknown-key-plus", "dltrain", ["+foo=1"], "foo is not a config key"),
    bad("wrong-type", "dltrain", ["trainer.max_epochs=abc"], "trainer.max_epochs=abc is not a whole number"),
    bad("unknown-option", "dltrain", ["model=nosuch"], "model=nosuch is not a known option: choose one of"),
    bad("batch-size-0", "dltrain", ["trainer.batch_size=0"], "trainer.batch_size=0 is out of range"),
    bad("dropout-1.5", "dltrain", ["regularization.dropout=1.5"], "regularization.dropout=1.5 is out of range"),
    bad("lr-inf", "dltrain", ["optim.lr=inf"], "optim.lr=inf is not valid: expected a finite number"),
    bad("eps-nan", "dltrain", ["optim.eps=nan"], "optim.eps=nan is not valid: expected a finite number"),
    bad("unknown-value", "dltrain", ["model.activation=swish"], "model.activation=swish is not a known value"),
    bad("list-length", "dltrain", ["optim.betas=[0.9]"], "optim.betas=[0.9] is not valid: expected a list of 2"),
    bad("list-item-range", "dltrain", ["model.hidden=[64,0]"], "model.hidden[1]=0 is out of range"),
    bad("nested-list", "dltrain", ["model.hidden=[[1]]"], "model.hidden[0]=[1] is not valid: expected a number"),
    bad("scalar-for-list", "dltrain", ["regularization.augment=rotate"], "is not a list: write it in brackets"),
    bad("device-string", "dltrain", ["device=gpu"], "device=gpu is not valid"),
    bad("removed-key", "dltrain", ["~seed"], "seed has no value"),
    bad("removed-group-key", "dltrain", ["~optim.lr"], "optim.lr cannot be removed"),
    bad("bad-interpolation", "dltrain", ["seed=${nosuch}"], "seed: Interpolation key 'nosuch' not found"),
    bad("option-name-mismatch", "dltrain", ["optim.name=sgd"], "does not match the optim config loaded"),
    bad("key-of-another-option", "dltrain", ["model.dropout=0.5"],
        "only model=rnn, lstm, gru, mnist_rnn, transformer have it"),
    bad("unquoted-parentheses", "dltrain", ["data.function=sin(3*x)"], "quote the value"),
    bad("not-key-value", "dltrain", ["optim.lr"], "Error parsing override 'optim.lr'", "write overrides as key=value"),
    bad("custom-key-without-plus", "dltrain", ["model=custom", "model._target_=tests.nets.TinyNet", "model.width=3"],
        "model.width is not a key of model=custom", "+model.width=VALUE"),
    bad("multirun-with-cfg", "dltrain", ["-m", "--cfg", "job", "optim=sgd,adam"], "Only one of --run, --multirun"),
    bad("fused-and-foreach", "dltrain", ["optim.fused=true", "optim.foreach=true"],
        "`fused` and `foreach` cannot be `True` together"),
]

DATA = [  # the data and the model it meets: a failed run says so in its summary.json
    bad("csv-missing-file", "dltrain", ["data=csv", "data.path=nope.csv", RUN_DIR],
        "data.path=nope.csv", "does not exist"),
    bad("csv-a-directory", "dltrain", lambda f, r: ["data=csv", f"data.path={f}", RUN_DIR], "is a directory"),
    bad("csv-empty-file", "dltrain", _csv_text(""), "is empty"),
    bad("csv-header-only", "dltrain", _csv_text("a,b\n"), "has a header but no data rows"),
    bad("csv-ragged", "dltrain", _csv_text("a,b\n1,2\n1,2,3,4\n"), "cannot be read as CSV"),
    bad("csv-not-utf8", "dltrain", lambda f, r: ["data=csv", f"data.path={_latin1(f)}", RUN_DIR],
        "is not UTF-8 text", "save it as UTF-8"),
    bad("csv-wrong-delimiter", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.delimiter=';'", RUN_DIR], "is data.delimiter right"),
    bad("csv-unknown-target", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.target=nope", RUN_DIR],
        "data.target=nope is not a column", "id, age, score, city"),
    bad("csv-unknown-features", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.target=label", "data.features=[age,nope]", RUN_DIR],
        "data.features names columns", "nope"),
    bad("csv-target-in-features", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.target=label", "data.features=[age,label]", RUN_DIR],
        "data.features lists the target column"),
    bad("csv-missing-values", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f, missing=3)}", "data.target=label", RUN_DIR],
        "has missing values: age (3), city (3)", "data.missing="),
    bad("csv-single-class", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_csv(f, {'x': range(30), 'target': ['a'] * 30})}", RUN_DIR],
        "data.target=target holds a single value"),
    bad("csv-regression-on-labels", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.target=label", "data.task=regression", RUN_DIR],
        "data.task=regression needs a numeric target"),
    bad("csv-binary-of-three", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_csv(f, {'x': range(60), 'target': [0, 1, 2] * 20})}",
                      "data.task=binary", RUN_DIR], "data.task=binary needs exactly 2 classes"),
    bad("csv-unknown-positive-class", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_table(f)}", "data.target=label", "data.positive_class=spam", RUN_DIR],
        "data.positive_class=spam is not a label of data.target=label"),
    bad("text-unknown-column", "dltrain",
        lambda f, r: ["data=text_csv", f"data.path={write_text_csv(f / 't.csv', 20)}", "data.text_column=body",
                      RUN_DIR], "data.text_column=body is not a column"),
    bad("text-rows-without-label", "dltrain",
        lambda f, r: ["data=text_csv", f"data.path={_texts_without_labels(f)}", RUN_DIR],
        "2 rows of data.path=", "have no label"),
    bad("images-not-a-folder", "dltrain", ["data=image_folder", "data.path=missing", RUN_DIR], "is not a folder"),
    bad("images-one-class", "dltrain",
        lambda f, r: ["data=image_folder", f"data.path={_image_folder(f, ('cat',))}", RUN_DIR],
        "one class folder (cat)"),
    bad("images-none", "dltrain", lambda f, r: ["data=image_folder", f"data.path={_empty_class_folders(f)}", RUN_DIR],
        "no image files"),
    bad("images-no-class-folders", "dltrain",
        lambda f, r: ["data=image_folder", f"data.path={_mkdir(f / 'nothing')}", RUN_DIR],
        "no class sub-folders"),
    bad("mnist-no-files", "dltrain", ["data=mnist", "data.root=mn", "data.download=false", RUN_DIR],
        "data=mnist: no MNIST files in", "data.download=true"),
    bad("fractions-over-1", "dltrain", ["data.val_fraction=0.5", "data.test_fraction=0.6", RUN_DIR],
        "data.val_fraction + data.test_fraction = 1.1"),
    bad("split-smaller-than-classes", "dltrain", ["data.val_fraction=0.001", RUN_DIR],
        "fewer examples than the 10 classes"),
    bad("sine-range", "dltrain", ["data=sine", "data.x_min=2", "data.x_max=1", RUN_DIR], "data.x_min=", "data.x_max"),
    bad("chirp-window", "dltrain", ["data=chirp", "data.length=200", "data.window=200", RUN_DIR],
        "make data.window smaller"),
    bad("classification-loss-on-regression", "dltrain", ["data=sine", "loss=cross_entropy", RUN_DIR],
        "loss=cross_entropy needs", "regression"),
    bad("label-smoothing-on-regression", "dltrain", ["data=sine", "regularization.label_smoothing=0.1", RUN_DIR],
        "regularization.label_smoothing=0.1 smooths class labels"),
    bad("monitor-never-logged", "dltrain", ["trainer.early_stopping.monitor=val_f1", RUN_DIR],
        "trainer.early_stopping.monitor=val_f1 is never logged"),
    bad("augment-without-images", "dltrain", ["data=sine", "regularization.augment=[hflip]", RUN_DIR],
        "regularization.augment needs images"),
    bad("crop-padding-too-big", "dltrain", ["regularization.augment=[crop]",
                                             "regularization.augment_params.crop.padding=8", RUN_DIR],
        "regularization.augment_params.crop.padding=8 does not fit"),
    bad("cnn-too-deep", "dltrain", ["model=cnn", "model.channels=[8,8,8,8]", RUN_DIR], "model=cnn cannot fit"),
    bad("custom-module-missing", "dltrain", ["model=custom", "model._target_=my_net.MyNet", RUN_DIR],
        "model._target_=my_net.MyNet", "no module named my_net"),
    bad("two-weight-decays", "dltrain", ["optim=adamw", "regularization.l2=0.1", RUN_DIR],
        "both set weight decay"),
    bad("nesterov-without-momentum", "dltrain", ["optim=nesterov", "optim.momentum=0", RUN_DIR],
        "optim=nesterov", "momentum"),
    bad("lbfgs-with-grad-clip", "dltrain", ["optim=lbfgs", "regularization.grad_clip=1.0", RUN_DIR],
        "regularization.grad_clip would hand optim=lbfgs"),
    bad("custom-output-width", "dltrain", ["model=custom", "model._target_=tests.nets.fixed_width_net", RUN_DIR],
        "model=custom outputs shape (2, 5) for a batch of 2"),
    bad("custom-returns-tuple", "dltrain", ["model=custom", "model._target_=tests.nets.TupleNet", RUN_DIR],
        "model=custom returned a tuple, not a tensor"),
    bad("custom-needs-mask", "dltrain", ["model=custom", "model._target_=tests.nets.NeedsMask", RUN_DIR],
        "dltrain calls forward(x) with one tensor", "give forward's other arguments default values"),
    bad("custom-no-parameters", "dltrain", ["model=custom", "model._target_=tests.nets.NoParams", RUN_DIR],
        "model=custom has no trainable parameters"),
    bad("custom-attribute-typo", "dltrain", ["model=custom", "model._target_=tests.nets.TinyNett", RUN_DIR],
        "has no attribute TinyNett", "did you mean tests.nets.TinyNet"),
    bad("custom-unknown-argument", "dltrain",
        ["model=custom", "model._target_=tests.nets.TinyNet", "+model.depth=3", RUN_DIR],
        "takes no argument model.depth"),
    bad("onecycle-zero-phase", "dltrain", ["scheduler=onecycle", "scheduler.pct_start=0.05", "trainer.max_epochs=1",
                                            RUN_DIR], "scheduler=onecycle cannot split", "pct_start"),
    bad("onecycle-with-warmup", "dltrain", ["scheduler=onecycle", "scheduler.warmup_epochs=1", RUN_DIR],
        "scheduler=onecycle warms up by itself"),
    bad("class-weights-length", "dltrain", ["loss=cross_entropy", "loss.class_weights=[1,2]", RUN_DIR],
        "loss.class_weights has 2 values but the data has 10 classes"),
    bad("in-memory-maybe", "dltrain",
        lambda f, r: ["data=image_folder", f"data.path={_image_folder(f)}", "data.in_memory=maybe", RUN_DIR],
        "data.in_memory='maybe'"),
    bad("images-split-without-train", "dltrain",
        lambda f, r: ["data=image_folder", f"data.path={_test_split_only(f)}", RUN_DIR],
        "has split folders but no train/ folder"),
    bad("mnist-unreadable-file", "dltrain", lambda f, r: ["data=mnist", f"data.root={_broken_mnist(f)}",
                                                           "data.download=false", RUN_DIR], "could not read MNIST"),
    bad("data-root-a-file", "dltrain", lambda f, r: ["data=mnist", f"data.root={_user_note(f)}", RUN_DIR],
        "data.root=", "is a file, not a folder"),
    bad("fp16-on-cpu", "dltrain", ["device=cpu", "trainer.precision=16", RUN_DIR], "trainer.precision=16 needs a CUDA"),
    bad("cuda-without-cuda", "dltrain", ["device=cuda", RUN_DIR], "device=cuda: CUDA is not available",
        marks=(pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA"),)),
]

RUNS = [  # run directories and resume: what is on disk stays as it was
    bad("resume-missing", "dltrain", ["resume=gone/last.pt", RUN_DIR], "resume=gone/last.pt", "no such file"),
    bad("resume-empty-dir", "dltrain", lambda f, r: [f"resume={_mkdir(f / 'empty')}", RUN_DIR], "holds no last.pt"),
    bad("resume-truncated", "dltrain", lambda f, r: [f"resume={_truncated(f, r)}", RUN_DIR], "cannot be loaded"),
    bad("resume-pickled-code", "dltrain", lambda f, r: [f"resume={_evil(f)}", RUN_DIR], "cannot be loaded", "refused"),
    bad("resume-architecture-change", "dltrain",
        lambda f, r: [f"resume={r.digits / 'checkpoints' / 'last.pt'}", "model.hidden=[7]", RUN_DIR],
        "model.hidden=[7]", "architecture"),
    bad("resume-restore-best-weights-change", "dltrain",
        lambda f, r: [f"resume={r.digits / 'checkpoints' / 'last.pt'}",
                      "trainer.early_stopping.restore_best_weights=false", RUN_DIR],
        "trainer.early_stopping.restore_best_weights=False"),
    bad("resume-experiment-change", "dltrain",
        lambda f, r: [f"resume={r.digits / 'checkpoints' / 'last.pt'}", "optim.lr=0.5", RUN_DIR],
        "optim.lr=0.5", "continues the same experiment"),
    bad("resume-into-its-own-run", "dltrain",
        lambda f, r: [f"resume={_copy_run(f, r) / 'checkpoints' / 'last.pt'}", "trainer.max_epochs=3",
                      f"hydra.run.dir={f / 'old'}"], "already holds a run", "hydra.run.dir"),
    bad("run-dir-holds-a-run", "dltrain", lambda f, r: [f"hydra.run.dir={_copy_run(f, r)}"], "already holds a run"),
    bad("bad-value-at-a-finished-run", "dltrain",
        lambda f, r: ["trainer.batch_size=0", f"hydra.run.dir={_copy_run(f, r)}"], "trainer.batch_size=0"),
    bad("sweep-dir-holds-runs", "dltrain", lambda f, r: ["-m", f"hydra.sweep.dir={_old_sweep(f)}", "optim=sgd,adam"],
        "hydra.sweep.dir=", "already holds runs"),
    bad("sweep-dir-a-file", "dltrain", lambda f, r: ["-m", f"hydra.sweep.dir={_user_note(f).name}", "optim=sgd,adam"],
        "hydra.sweep.dir=notes.txt cannot be created", "it is a file", "with hydra.sweep.dir=PATH"),
    bad("sweep-dir-with-user-files", "dltrain",
        lambda f, r: ["-m", f"hydra.sweep.dir={_user_files(f)}", "optim=sgd,adam"],
        "is not empty (it holds", "a sweep claims only an empty or new directory"),
    bad("sweep-without-job-config", "dltrain", ["-m", "hydra.output_subdir=null", "optim=sgd,adam"],
        "hydra.output_subdir=null"),
    bad("sweep-value-cannot-compose", "dltrain", ["-m", "optim.lr=0.1,abc", "hydra.sweep.dir=S"],
        "optim.lr=abc is not a number: optim.lr takes a float"),
    bad("diverged", "dltrain", ["data=xor", "optim=sgd", "optim.lr=1e12", "trainer.max_epochs=1", RUN_DIR],
        "the training loss became nan", "lower optim.lr", code=3),
]

EVAL = [
    *_ckpt_entries("dltrain-eval", lambda f: []),
    bad("eval-ckpt-required", "dltrain-eval", ["split=val"], "ckpt=... is required"),
    bad("eval-unknown-key", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "colour=red"],
        "unknown key colour: dltrain-eval takes ckpt, split, device"),
    bad("eval-training-key", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "trainer.max_epochs=3"],
        "trainer.max_epochs cannot be changed here"),
    bad("eval-split-key", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "data.val_fraction=0.5"],
        "data.val_fraction cannot be changed here"),
    bad("eval-key-of-other-data", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "data.path=elsewhere.csv"],
        "data.path is not a key of this checkpoint's data=digits config"),
    bad("eval-split", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "split=train"], "split=train is not a choice"),
    bad("eval-device", "dltrain-eval", lambda f, r: [f"ckpt={r.best}", "device=tpu"], "device=tpu is not valid"),
    bad("eval-positional", "dltrain-eval", ["best.pt"], "argument 'best.pt' is not key=value"),
    bad("eval-other-table", "dltrain-eval",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"data.path={_wider(f, r)}"],
        "not what", "input shape: (6,) when trained, (7,) now"),
]

PREDICT = [
    *_ckpt_entries("dltrain-predict", _points),
    bad("predict-input-output-required", "dltrain-predict", lambda f, r: [f"ckpt={r.best}"],
        "input=..., output=... are required"),
    bad("predict-unknown-key", "dltrain-predict", lambda f, r: [f"ckpt={r.best}", *_points(f), "colour=red"],
        "unknown key colour: dltrain-predict takes ckpt, input, output, device, batch_size"),
    bad("predict-config-key", "dltrain-predict", lambda f, r: [f"ckpt={r.best}", *_points(f), "data.path=x.csv"],
        "unknown key data.path"),
    bad("predict-batch-size", "dltrain-predict", lambda f, r: [f"ckpt={r.best}", *_points(f), "batch_size=0"],
        "batch_size=0 is not a whole number"),
    bad("predict-input-missing", "dltrain-predict",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"input={f / 'absent.csv'}",
                      f"output={f / 'o.csv'}"], "input=", "absent.csv does not exist"),
    bad("predict-column-missing", "dltrain-predict",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"input={_no_score(f, r)}", f"output={f / 'o.csv'}"],
        "has no column score: the model reads the columns id, age, score, city"),
    bad("predict-gaps-after-drop", "dltrain-predict",
        lambda f, r: [f"ckpt={_edited(r, f, _trained_with_drop, source=r.csv / 'checkpoints' / 'best.pt')}",
                      f"input={r.table}", f"output={f / 'o.csv'}"], "empty cells in age (3 rows)", "data.missing=drop"),
    bad("predict-unknown-dataset", "dltrain-predict",
        lambda f, r: [f"ckpt={_edited(r, f, _chirp)}", f"input={f}", f"output={f / 'o.csv'}"],
        "dltrain-predict does not read inputs of data=chirp"),
    bad("predict-no-images", "dltrain-predict",
        lambda f, r: [f"ckpt={r.best}", f"input={_mkdir(f / 'empty')}", f"output={f / 'o.csv'}"],
        "holds no image files"),
]

INTEGRITY = [  # numbers, tables, texts and sizes that would train on nonsense
    bad("csv-infinite-cell", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_numbers_csv(f, z=_with_cells(_numbers().z.tolist(), {7: 'inf'}))}",
                      "data.target=y", RUN_DIR], "column z holds infinite numbers in row 7", "replace them"),
    bad("csv-target-too-large", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_numbers_csv(f, price=_numbers().z * 1e300)}", "data.target=price",
                      "data.features=[x]", RUN_DIR],
        "data.target=price holds values up to", "too large to standardise"),
    bad("csv-feature-too-large", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_numbers_csv(f, z=_numbers().z * 1e200)}", "data.target=y", RUN_DIR],
        "column z cannot be standardised: the values are too large"),
    bad("csv-duplicate-column-names", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_csv_lines(f, 'a,b,a,y', 40)}", "data.target=y", RUN_DIR],
        "names a column more than once in its header: a (2 columns)"),
    bad("csv-single-row-classes", "dltrain",
        lambda f, r: ["data=csv", f"data.path={_numbers_csv(f, customer=[f'c{i}' for i in range(100)])}",
                      "data.target=customer", "data.features=[x]", RUN_DIR],
        "data.target=customer has 100 classes in 100 rows", "choose another data.target"),
    bad("text-all-empty", "dltrain",
        lambda f, r: ["data=text_csv", f"data.path={_texts(f, [''] * 40 + [' '] * 10)}", RUN_DIR],
        "data.text_column=text: every text of the training split is empty"),
    bad("text-no-frequent-token", "dltrain",
        lambda f, r: ["data=text_csv", f"data.path={_texts(f, [f'w{i}' for i in range(50)])}", RUN_DIR],
        "data.min_freq=2: no token appears 2 times", "lower data.min_freq"),
    bad("bce-on-several-classes", "dltrain", ["loss=bce", RUN_DIR], "loss=bce scores two classes",
        "10 classes that exclude each other", "use loss=cross_entropy"),
    bad("image-size-huge", "dltrain",
        ["data=image_folder", "data.path=nowhere", "data.image_size=[100000,100000]", RUN_DIR],
        "data.image_size[0]=100000 is out of range: it must be <= 4096"),
    bad("resume-bit-rot", "dltrain", lambda f, r: [f"resume={_bit_rotted(f, r)}", RUN_DIR],
        "is damaged (member", "fails its checksum"),
    bad("predict-infinite-cell", "dltrain-predict",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"input={_table_with_cell(f, r, 4, '-inf')}",
                      f"output={f / 'o.csv'}"], "column age holds infinite numbers in row 4 (0 = the first data row)"),
    bad("predict-stray-string-without-fill", "dltrain-predict",
        lambda f, r: [f"ckpt={_edited(r, f, _table_run_with_missing_error, source=r.csv / 'checkpoints' / 'best.pt')}",
                      f"input={_table_with_cell(f, r, 2, '?')}", f"output={f / 'o.csv'}"],
        "empty cells in age (1 row; row 2 not numbers: '?')"),
]

NEVER_OVERWRITTEN = [  # files of the user's that a run or a prediction would otherwise replace
    bad("run-dir-with-user-files", "dltrain", lambda f, r: [f"hydra.run.dir={_user_files(f)}"],
        "mine is not empty (it holds ", "data.json", "predictions.csv", "summary.json",
        "choose another directory with hydra.run.dir="),
    bad("predict-output-is-the-checkpoint", "dltrain-predict",
        lambda f, r: [f"ckpt={_copy_ckpt(f, r)}", f"input={r.table}", f"output={f / 'best.pt'}"],
        "is the checkpoint", "another file"),
    bad("predict-output-is-the-checkpoint-even-told", "dltrain-predict",
        lambda f, r: [f"ckpt={_copy_ckpt(f, r)}", f"input={r.table}", f"output={f / 'best.pt'}", "overwrite=true"],
        "is the checkpoint", "another file"),
    bad("predict-output-is-the-input", "dltrain-predict",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"input={_copy_table(f, r)}",
                      f"output={f / 'table.csv'}", "overwrite=true"], "is the input file"),
    bad("predict-output-a-user-file", "dltrain-predict",
        lambda f, r: [f"ckpt={r.csv / 'checkpoints' / 'best.pt'}", f"input={r.table}",
                      f"output={_user_table(f)}"],
        "exists and is not a predictions file of dltrain-predict", "choose another output=... or pass overwrite=true"),
]

def _stored_value_entries(tool: str, extra: Callable[[Path], list[str]]) -> list:
    """Checkpoints whose stored config holds a value no composed config could."""
    return [
        bad(f"{tool}-stored-value-out-of-range", tool,
            lambda f, r: [f"ckpt={_crafted(f, r, 'trainer.eval_batch_size', -5)}", *extra(f)],
            "its config does not fit this dltrain version", "trainer.eval_batch_size=-5 is out of range"),
        bad(f"{tool}-stored-data-record", tool,
            lambda f, r: [f"ckpt={_edited(r, f, _weird_task)}", *extra(f)],
            "its data record's task=weird is not one of", "use a checkpoint written by dltrain training"),
        bad(f"{tool}-stored-unknown-key", tool,
            lambda f, r: [f"ckpt={_crafted(f, r, 'data.unknown', 1)}", *extra(f)],
            "its config does not fit this dltrain version", "data.unknown: Key 'unknown' not in"),
    ]


TRUST = [  # nothing a checkpoint stores is imported, called or evaluated without the user's say-so
    *_stored_value_entries("dltrain-eval", lambda f: []),
    *_stored_value_entries("dltrain-predict", _points),
    bad("generated-samples-bound", "dltrain", ["data=sine", "data.samples=100000000", RUN_DIR],
        "data.samples=100000000 is out of range: it must be <= 10000000"),
    *_trust_entries("dltrain", "resume", lambda f: [RUN_DIR]),
    *_trust_entries("dltrain-eval", "ckpt", lambda f: []),
    *_trust_entries("dltrain-predict", "ckpt", _points),
    bad("eval-another-target-named", "dltrain-eval",
        lambda f, r: [f"ckpt={_crafted(f, r, 'model', EVIL_MODELS['os.system'])}", "model._target_=tests.nets.TinyNet"],
        "was trained with model._target_=os.system, not the model._target_=tests.nets.TinyNet given"),
    bad("function-power-tower", "dltrain", ["data=sine", "data.function='9**9**9'", RUN_DIR],
        "is not a known function or a valid expression", "the exponent 9**9 = 387420489 is beyond ±100"),
    bad("function-code", "dltrain", ["data=sine", "data.function='().__class__.__bases__[0].__subclasses__()'",
                                     RUN_DIR], "is not a known function or a valid expression", "is not allowed"),
]

PYTHON_TAG = "!!python/object/apply:os.system"

ONE_LINE = [  # what once ended in a traceback
    bad("run-dir-a-file", "dltrain", lambda f, r: [f"hydra.run.dir={_user_note(f).name}"],
        "hydra.run.dir=notes.txt", "it is a file", "choose another directory"),
    bad("run-dir-below-a-file", "dltrain", lambda f, r: [f"hydra.run.dir={_user_note(f).name}/run"],
        "hydra.run.dir=notes.txt/run", "a folder above it is a file"),
    bad("full-disk-at-start-up", "dltrain", lambda f, r: [RUN_DIR, f"hydra.output_subdir={_full_disk(f)}"],
        "No space left on device", "free some space",
        marks=(pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full"),)),
    bad("run-dir-read-only", "dltrain", ["hydra.run.dir=locked/run"], "hydra.run.dir=locked/run cannot be created",
        "Read-only file system", machine=_read_only_disk),
    bad("full-disk-at-summary", "dltrain", ["data=xor", "trainer.fast_dev_run=true", RUN_DIR],
        "summary.json could not be written (No space left on device)", "results are printed above",
        machine=_full_disk_for_summary),
    bad("config-dir-yaml-syntax", "dltrain", lambda f, r: _config_dir(f, "mine", "name: mlp\nhidden: [64, 32\n"),
        "mine.yaml, line 3: not valid YAML", "fix the file"),
    bad("config-dir-python-tag", "dltrain",
        lambda f, r: _config_dir(f, "evil", f"name: mlp\nhidden: {PYTHON_TAG} ['touch {f / 'pwned'}']\n"),
        f"evil.yaml, line 2: the tag {PYTHON_TAG} is not allowed", "remove the tag"),
    bad("unquoted-delimiter", "dltrain", ["data=csv", "data.path=t.csv", "data.delimiter=;"],
        "data.delimiter=; cannot be read as written", "quote the value, e.g. 'data.delimiter=\";\"'"),
    bad("resume-another-model", "dltrain",
        lambda f, r: [f"resume={r.digits / 'checkpoints' / 'last.pt'}", "model=cnn", RUN_DIR],
        "model=mlp (checkpoint) vs model=cnn (now)"),
]

CORPUS = [*CONFIG, *DATA, *RUNS, *EVAL, *PREDICT, *INTEGRITY, *NEVER_OVERWRITTEN, *TRUST, *ONE_LINE]


# --- running a tool in this process -------------------------------------------------------------------------------


def _snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()}



def _run(tool: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int | str | None:
    """Run a console script in this process; its exit code (0 when it returned)."""
    from hydra._internal.hydra import Hydra

    from dltrain.cli import app as cli
    from dltrain.inference import evaluate, predict

    mains = {"dltrain": cli.main, "dltrain-eval": lambda: evaluate.main(argv),
             "dltrain-predict": lambda: predict.main(argv)}
    monkeypatch.setattr(sys, "argv", [tool, *argv])
    monkeypatch.setattr(cli, "_sweep", {**cli._sweep, "dir": None, "summarized": False, "exit_code": 0})
    monkeypatch.setattr(cli, "_run_dir", None, raising=False)  # the run directory this process claimed
    # Hydra composes the config twice: first only to read hydra.mode, swallowing any error,
    # then for the run. No dltrain config sets hydra.mode (so the first gives None, as it does
    # whenever composition fails): skipping it halves the corpus's time and changes nothing else.
    monkeypatch.setattr(Hydra, "get_mode", lambda self, config_name, overrides: None)
    with logging_restored():
        try:
            mains[tool]()
        except SystemExit as done:
            return done.code
    return 0


@pytest.mark.parametrize("case", CORPUS)
def test_bad_input_is_one_line_and_loses_nothing(case: Bad, runs: Runs, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # a custom model's folder is added to it
    argv = case.build(tmp_path, runs)
    before = _snapshot(tmp_path, runs.root)
    if case.machine is not None:
        case.machine(monkeypatch)
    capsys.readouterr()
    code = _run(case.tool, argv, monkeypatch)
    out, err = capsys.readouterr()
    assert code == case.code, err
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{case.tool}: error: "), err
    assert all(fragment in lines[0] for fragment in case.expected), lines[0]
    # The crafted pickles, configs and modules would create it: none of their code ran.
    assert not (tmp_path / "pwned").exists() and sys.modules.pop("corpus_evil_module", None) is None
    after = _snapshot(tmp_path, runs.root)
    assert {p: after.get(p) for p in before} == before  # nothing already written was changed or removed
    summary = tmp_path / "run" / "summary.json"
    if summary in after and summary not in before:  # a run that started says why it ended
        written = json.loads(summary.read_text())
        assert written["status"] in ("failed", "diverged") and written["stop_reason"].rstrip(".") in lines[0]


def test_the_corpus_covers_every_tool() -> None:
    assert {p.values[0].tool for p in CORPUS} == set(TOOLS)
    assert len({p.id for p in CORPUS}) == len(CORPUS)
