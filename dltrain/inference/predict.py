"""``dltrain-predict``: a checkpoint's predictions for new inputs, which are preprocessed
from what the checkpoint recorded about its training data, never from the training files.

    dltrain-predict ckpt=PATH input=PATH output=predictions.csv [device=auto] [batch_size=512]

The output CSV has one row per input: ``input`` (the row number in the CSV, 0 = first data
row, or the image's path relative to the input folder), then ``prediction`` (a class name;
labels joined by ``|`` for multi-label data; a value in the target's units for regression,
``prediction_<j>`` for several targets) and for classes ``confidence`` and one
``p_<class>`` probability column per class (per label for multi-label data), and last
``input_warnings``: empty, or why the input does not look like the training data (see
:mod:`dltrain.data.preprocessing.drift`), with one warning on stderr for them all.

``ckpt=<folder>/model.onnx``, a model ``dltrain-export`` wrote, is predicted by
:mod:`dltrain.inference.onnx_predict` with onnxruntime, without importing torch, into the same CSV.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltrain.errors import UserError
from dltrain.inference.rows import (  # noqa: F401  (check_output, write_rows: imported from here too)
    TOOL,
    check_output,
    flagged,
    prediction_rows,
    warn,
    write_predictions,
    write_rows,
)
from dltrain.inference.tool import REQUIRED, TRUST_KEYS, Key, parse_args, run_tool

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: an exported model runs without it
    import torch

    from dltrain.inference.restore import Restored

KEYS = {
    "ckpt": Key(REQUIRED, "the checkpoint: a run's checkpoints/best.pt or last.pt; or an exported model.onnx"),
    "input": Key(REQUIRED, "what to predict (see above)"),
    "output": Key(REQUIRED, "the CSV file to write; an existing one only if dltrain-predict wrote it"),
    "device": Key("auto", "auto, cpu, cuda, cuda:N or mps; auto takes a GPU when there is one"),
    "batch_size": Key(512, "inputs per forward pass"),
    "overwrite": Key(False, "true: replace output= even if it is not an earlier dltrain-predict file"),
    "returns": Key("auto", "auto (the checkpoint's own: predictions, or an autoencoder's latents), predictions, "
                           "latents or reconstructions (an autoencoder's: the error, and the images written)"),
    **TRUST_KEYS,
}
ABOUT = """Predict with a checkpoint, preprocessing the inputs exactly as its training data was. input is:
{inputs}
The output CSV has one row per input: input (row number from 0, or image path), prediction,
for classes confidence and a p_<class> probability per class, and input_warnings: why the
input does not look like the training data (resized, inverted, out_of_range: columns,
unknown_words), if it does not. ckpt=<folder>/model.onnx (written by dltrain-export) predicts the
same with onnxruntime alone, without torch (see dltrain-predict ckpt=<...>.onnx --help)."""
EXAMPLE = f"{TOOL} ckpt=outputs/2024-05-01/12-00-00/checkpoints/best.pt input=new.csv output=predictions.csv"


def predict_file(ckpt: str | Path, source: str | Path, output: str | Path, device: str = "auto",
                 batch_size: int = 512, *, model_target: str | None = None, trust_code: bool = False,
                 overwrite: bool = False, returns: str = "auto") -> int:
    """Predict every row or image of ``source`` (the ``input`` key) with ``ckpt`` and write ``output``.

    ``model_target`` and ``trust_code`` say what a ``model=custom`` checkpoint may import
    (``target`` and ``trust_code`` of :func:`~dltrain.inference.restore.load_model`); ``returns``
    what each row holds (:mod:`dltrain.inference.predict_autoencoder`).

    Returns:
        The number of rows written.

    Raises:
        UserError: a bad checkpoint or device, inputs that cannot be read or do not match
            what the model was trained on, or a dataset whose inputs this tool does not read.
        Interrupted: a stop signal (SIGTERM, Ctrl-C) before the output was written: nothing was;
            one while it is written ends the run once it is whole, saying so.
    """
    import torch

    from dltrain.inference.predict_autoencoder import batch_rows, replaced_when_done, resolve_returns
    from dltrain.inference.restore import check_serves, load_model
    from dltrain.training.signals import StopRequest, held

    source, target = Path(source), Path(output)
    check_output(target, Path(ckpt), source, overwrite)
    # SIGTERM (and the other stop signals) end the run as Ctrl-C does: through replaced_when_done's discard.
    with StopRequest(), ExitStack() as writing:
        restored = load_model(ckpt, device, target=model_target, trust_code=trust_code)
        dev = next((p.device for p in restored.model.parameters()), torch.device("cpu"))
        kind = resolve_returns(returns, restored, TOOL)
        check_serves(ckpt, restored.cfg)  # a GAN's model outputs D's logit, no label of the data
        rows_of = batch_rows(kind, restored, target) if kind != "predictions" else None  # an autoencoder's
        rows: list[dict[str, Any]] = []
        with torch.no_grad(), replaced_when_done(rows_of):  # an earlier run's images stay until every input is read
            for ids, x, flags in read_flagged_inputs(restored, source, batch_size):
                rows += flagged(rows_of(x.to(dev), ids, len(rows)) if rows_of is not None else
                                output_rows(restored.model(x.to(dev)).float().cpu(), ids, restored.data), flags)
            writing.enter_context(held())  # every input read: a stop waits until the images and CSV are written
        return write_predictions(target, source, rows)


def read_inputs(restored: Restored, path: Path, batch_size: int) -> Iterator[tuple[list[Any], torch.Tensor]]:
    """Batches ``(ids, inputs)`` of ``path`` preprocessed for the model in ``restored``.

    Raises:
        UserError: see :func:`predict_file`.
    """
    for ids, x, _ in read_flagged_inputs(restored, path, batch_size):
        yield ids, x


def read_flagged_inputs(restored: Restored, path: Path,
                        batch_size: int) -> Iterator[tuple[list[Any], torch.Tensor, list[str]]]:
    """:func:`read_inputs` with each input's flags: why it does not look like the training
    data (see :mod:`dltrain.data.preprocessing.drift`), empty where it does. The checkpoint's fitted
    preprocessing reads and preprocesses them (see :mod:`dltrain.data.preprocessing`).

    Raises:
        UserError: see :func:`predict_file`.
    """
    from dltrain.data import preprocessing

    prep = preprocessing.from_record(restored.data, restored.cfg.data, restored.path)
    if prep is None:
        dataset = restored.data["dataset"]
        raise UserError(f"{TOOL} does not read inputs of data={dataset}: it reads those of data="
                        f"{', '.join(preprocessing.readable(listed_data()))}; for data={dataset} call the model "
                        "from Python (dltrain.inference.load_model)")
    yield from prep.read(path, batch_size, warn)


# --- output ------------------------------------------------------------------------------------------------------


def output_rows(outputs: torch.Tensor, ids: list[Any], data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per input from the model's outputs ``(N, width)``, in the data's own terms
    (class names, probabilities, the target's units), rounded as ``predictions.csv`` is (see
    :func:`~dltrain.inference.rows.prediction_rows`)."""
    return prediction_rows(model_result(outputs, data).numpy(), ids, data)


def model_result(outputs: torch.Tensor, data: dict[str, Any]) -> torch.Tensor:
    """The model's outputs ``(N, width)`` as what an exported model returns: the probability of
    each class ``(N, K)`` (of each label for multi-label data), or values in the target's units."""
    import torch

    task = data["task"]
    if task in ("binary", "multiclass"):
        if outputs.shape[1] == 1:  # one binary logit (loss=bce)
            p1 = torch.sigmoid(outputs[:, 0])
            return torch.stack([1 - p1, p1], dim=1)  # (N, 2)
        return torch.softmax(outputs, dim=1)  # of logits, or of log-probabilities (nll): the same probabilities
    if task == "multilabel":
        return torch.sigmoid(outputs)
    mean, std = data.get("target_scale") or (0.0, 1.0)
    return outputs * std + mean  # (N, targets)


def refuse_export(path: Path) -> None:
    """Refuse, in one line, an export folder of ``dltrain-export`` or its TorchScript / ExportedProgram
    file given as a checkpoint, saying what this tool runs and how the others load.

    Raises:
        UserError: ``path`` is such a folder or file (``model.json`` in it or beside it).
    """
    from dltrain.export.contract import CARD, MODEL_FILES

    folder = path if path.is_dir() else path.parent
    if not (folder / CARD).is_file() or not (path.is_dir() or path.name in MODEL_FILES.values()):
        return
    onnx = folder / MODEL_FILES["onnx"]
    run = (f"give ckpt={onnx}" if onnx.is_file() else
           "export the checkpoint with format=onnx and give its model.onnx")
    raise UserError(f"ckpt={path} is an export of dltrain-export, and {TOOL} runs an export's model.onnx only: {run}; "
                    "load a model.pt with torch.jit.load and a model.pt2 with torch.export.load")


def listed_data() -> list[str]:
    """The ``data=`` options in the order their schemas are declared, the order help lists them in."""
    from dltrain.config.schemas import GROUP_SCHEMAS

    return list(GROUP_SCHEMAS["data"])


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``dltrain-predict``: an exported ONNX model (``ckpt=<...>.onnx``) runs by
    :mod:`dltrain.inference.onnx_predict`, decided before torch is imported."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg.startswith("ckpt=") and arg.lower().endswith(".onnx") for arg in argv):
        from dltrain.inference.onnx_predict import main as predict_exported

        predict_exported(argv)
        return

    def run() -> None:
        for arg in argv:
            if arg.startswith("ckpt="):
                refuse_export(Path(arg[5:]))
        from dltrain.data.preprocessing import inputs_help

        try:  # the datasets registered, by what their inputs are, in the order the options are declared
            about = ABOUT.format(inputs=inputs_help(listed_data()))
        except ImportError as err:  # dltrain installed without its dependencies: exported models only
            if any(arg in ("-h", "--help") for arg in argv):
                from dltrain.inference.onnx_predict import main as predict_exported

                predict_exported(argv)  # its usage
            raise UserError(f"{err.name} is not installed, and a checkpoint needs dltrain's dependencies: pip install "
                            "dltrain, or give an exported model (ckpt=<folder>/model.onnx, see dltrain-export)"
                            ) from None
        args = parse_args(argv, TOOL, KEYS, about=about, example=EXAMPLE, config_keys=False)
        predict_file(args["ckpt"], args["input"], args["output"], args["device"], args["batch_size"],
                     model_target=args["model._target_"], trust_code=args["trust_code"], overwrite=args["overwrite"],
                     returns=args["returns"])

    run_tool(TOOL, run)


if __name__ == "__main__":
    main()
