"""``dltrain-export``: a checkpoint as one model file that reads raw inputs, verified on the
checkpoint's test split, with ``model.json`` beside it.

    dltrain-export ckpt=PATH format=onnx|torchscript|exported_program [output=FOLDER] [batch_size=64]

Writes ``<run dir>/export-<checkpoint>-<format>/`` (or ``output=``): the model file, ``model.json``
and, for text, ``vocab.txt``; it replaces only those files, and refuses a folder holding others.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dltrain.errors import UserError
from dltrain.export.contract import CARD, MODEL_FILES, OWN_FILES, is_card_version
from dltrain.inference.tool import REQUIRED, TRUST_KEYS, Key, parse_args, run_tool

TOOL = "dltrain-export"
DEFAULT_OUTPUT = "<run dir>/export-<checkpoint>-<format>"
KEYS = {
    "ckpt": Key(REQUIRED, "the checkpoint: a run's checkpoints/best.pt or last.pt"),
    "format": Key(REQUIRED, "onnx (run with onnxruntime), torchscript (torch.jit.load) or exported_program "
                            "(torch.export.load)"),
    "output": Key(DEFAULT_OUTPUT, "the folder to write"),
    "batch_size": Key(64, "examples per call when verifying on the test split"),
    "verbose": Key(False, "true: show the exporter's own output"),
    **TRUST_KEYS,
}
ABOUT = ("Export a checkpoint as one model file that takes raw inputs (image pixels 0..255, table columns, token\n"
         "ids, points) and returns probabilities or values in the target's units: the fitted preprocessing is\n"
         "inside the graph. Verifies it on the checkpoint's test split against dltrain, and writes model.json\n"
         "(input and output contract, what to do outside the graph) beside it.")
EXAMPLE = f"{TOOL} ckpt=outputs/2024-05-01/12-00-00/checkpoints/best.pt format=onnx"


def export_folder(ckpt: Path, fmt: str, output: str = "") -> tuple[Path, list[str]]:
    """Where the export goes: ``output``, or ``export-<checkpoint>-<format>/`` in the checkpoint's
    run directory (the folder above ``checkpoints/``), else beside it; and the files an earlier
    export of this tool left there (its ``model.json`` and the files it lists), which it may replace.

    Raises:
        UserError: the folder is a file, or holds anything but an earlier export of this tool.
    """
    home = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    folder = Path(output) if output and output != DEFAULT_OUTPUT else home / f"export-{ckpt.stem}-{fmt}"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output={folder} is a file: give a folder (output=...) for the export")
    if not folder.is_dir():
        return folder, []
    ours = _own_files(folder / CARD) if (folder / CARD).is_file() else []
    left = ".model.tmp-"  # a file an interrupted export was writing
    if others := sorted(p.name for p in folder.iterdir() if p.name not in ours and not p.name.startswith(left)):
        where = f"{folder / CARD} was not written by {TOOL}" if CARD in others else (
            f"{folder} holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, which {TOOL} did not write")
        raise UserError(f"{where}, and it replaces only its own files: choose another output=... (an empty or new "
                        "folder, or one of its exports)")
    return folder, ours


def _own_files(path: Path) -> list[str]:
    """``model.json`` and the files it lists (model file, vocabulary), if this tool wrote it; else none."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(card, dict) or not is_card_version(card.get("dltrain_export")):
        return []
    spec = card.get("input")
    listed = [card.get("file"), spec.get("vocabulary_file") if isinstance(spec, dict) else None]
    return [CARD, *(name for name in listed if name in OWN_FILES)]


def export_checkpoint(ckpt: str | Path, fmt: str, output: str = "", batch_size: int = 64, *, verbose: bool = False,
                      overrides: dict[str, Any] | None = None, model_target: str | None = None,
                      trust_code: bool = False) -> Path:
    """Export ``ckpt`` in format ``fmt`` and verify it on its test split.

    Returns:
        The folder written.

    Raises:
        UserError: a bad checkpoint, format or folder, a model the format cannot hold, or outputs
            that differ from dltrain's by more than the tolerance (nothing is kept then).
    """
    import torch

    from dltrain.data.preprocessing import kind_of
    from dltrain.export import formats
    from dltrain.export.autoencoder import encoder_of
    from dltrain.export.card import card_files, model_card
    from dltrain.export.graph import export_graph
    from dltrain.export.raw import held_out
    from dltrain.export.verify import check, describe, verify
    from dltrain.files import atomic_write, write_json
    from dltrain.inference.restore import apply_overrides, check_serves, load_model

    spec = formats.check_format(fmt)
    ckpt = Path(ckpt)
    folder, earlier = export_folder(ckpt, fmt, output)
    restored = load_model(ckpt, torch.device("cpu"), target=model_target, trust_code=trust_code)
    check_serves(ckpt, restored.cfg)  # a GAN's model is its discriminator: no classifier of the data
    apply_overrides(restored.cfg, overrides or {})
    examples = held_out(restored)
    restored = encoder_of(restored)  # an autoencoder's export is its encoder: inputs -> latent codes
    graph = export_graph(restored)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.file
    tmp = folder / f".{target.stem}.tmp-{os.getpid()}{target.suffix}"  # the exporters read the suffix
    try:
        formats.write_model(graph, fmt, tmp, verbose=verbose)
        result = verify(formats.load_model_file(fmt, tmp, verbose=verbose), restored.model, examples,
                        restored.data, batch_size)
        print(f"{TOOL}: {describe(result)}")
        check(result, fmt)
        versions = _versions(fmt, tmp)
        tmp.replace(target)
    except UserError:
        # An earlier export in the folder would be taken for this checkpoint's: no model.json claims success.
        for name in earlier:
            (folder / name).unlink(missing_ok=True)
        if created:  # a failed export leaves no empty folder of its own behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    card = model_card(graph, restored, kind=kind_of(restored.data), fmt=fmt, file=spec.file, versions=versions,
                      verification={**result, "runtime": spec.runtime()})
    for name, text in card_files(graph).items():
        with atomic_write(folder / name, encoding="utf-8") as f:
            f.write(text)
    write_json(folder / CARD, card)
    written = [spec.file, CARD, *card_files(graph)]
    for name in set(earlier) - set(written):  # an earlier export's vocab.txt or other model file
        (folder / name).unlink(missing_ok=True)
    print(f"{TOOL}: wrote {folder}/: {', '.join(written)}")
    return folder


def _versions(fmt: str, path: Path) -> dict[str, Any]:
    """The versions of what wrote the file (and, for ONNX, its opset)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions: dict[str, Any] = {}
    for package in ("dltrain", "torch", *(("onnx", "onnxscript") if fmt == "onnx" else ())):
        try:
            versions[package] = torch.__version__ if package == "torch" else version(package)
        except PackageNotFoundError:
            versions[package] = None
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        versions["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return versions


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-export``."""
    def run() -> None:
        args = parse_args(sys.argv[1:] if argv is None else list(argv), TOOL, KEYS, about=ABOUT, example=EXAMPLE)
        if args["format"] not in MODEL_FILES:
            raise UserError(f"format={args['format']} is not a format {TOOL} writes: choose one of "
                            f"{', '.join(MODEL_FILES)}")
        export_checkpoint(args["ckpt"], args["format"], args["output"], args["batch_size"], verbose=args["verbose"],
                          overrides=args["overrides"], model_target=args["model._target_"],
                          trust_code=args["trust_code"])

    run_tool(TOOL, run)


if __name__ == "__main__":
    main()
