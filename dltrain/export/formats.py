"""The formats an exported graph is written in, each with its writer and the runtime that reads
it back: ``onnx`` (torch.onnx's dynamo exporter; run with onnxruntime), ``torchscript``
(``torch.jit.trace``; ``torch.jit.load``) and ``exported_program`` (``torch.export``;
``torch.export.load``). Every file takes one input with a dynamic batch dimension (dim 0,
``batch``; text ids also a dynamic ``length``, dim 1) and returns one output."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltrain.errors import UserError
from dltrain.export.contract import MODEL_FILES, onnx_session
from dltrain.export.graph import ExportGraph

#: Examples in the input the graph is traced with: not 1, which exporters treat as a constant size.
TRACE_BATCH = 3


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        file: the model file's name.
        write: writes the graph to a path, from an example input.
        load: reads the file back as a function of numpy inputs -> numpy outputs.
        runtime: what runs it back, for the verification line and ``model.json``.
    """

    file: str
    write: Callable[[ExportGraph, torch.Tensor, Path], None]
    load: Callable[[Path], Callable[[np.ndarray], np.ndarray]]
    runtime: Callable[[], str]


def _dynamic(graph: ExportGraph) -> dict[int, Any]:
    """The dynamic dimensions of the graph's input: the batch, and any named in its shape."""
    dims = {0: torch.export.Dim("batch")}
    for i, size in enumerate(graph.inputs.shape, start=1):
        if isinstance(size, str):
            dims[i] = torch.export.Dim(size)
    return dims


def _write_onnx(graph: ExportGraph, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(graph, (example,), str(path), dynamo=True, input_names=[graph.inputs.name],
                      output_names=[graph.head.name], dynamic_shapes=(_dynamic(graph),), external_data=False,
                      verbose=False, optimize=True)


def _load_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    session = onnx_session(path, ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _write_torchscript(graph: ExportGraph, example: torch.Tensor, path: Path) -> None:
    traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


def _load_torchscript(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    module = torch.jit.load(str(path), map_location="cpu")
    return lambda x: _run_torch(module, x)


def _write_program(graph: ExportGraph, example: torch.Tensor, path: Path) -> None:
    program = torch.export.export(graph, (example,), dynamic_shapes=(_dynamic(graph),))
    torch.export.save(program, str(path))


def _load_program(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    module = torch.export.load(str(path)).module()
    return lambda x: _run_torch(module, x)


def _run_torch(module: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _onnxruntime() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


FORMATS: dict[str, Format] = {
    "onnx": Format(MODEL_FILES["onnx"], _write_onnx, _load_onnx, _onnxruntime),
    "torchscript": Format(MODEL_FILES["torchscript"], _write_torchscript, _load_torchscript,
                          lambda: f"torch.jit {torch.__version__}"),
    "exported_program": Format(MODEL_FILES["exported_program"], _write_program, _load_program,
                               lambda: f"torch.export {torch.__version__}"),
}
#: What to try when a format fails (ONNX is written through torch.export: what one cannot follow, nor can the other).
OTHER = {"onnx": "torchscript", "torchscript": "exported_program", "exported_program": "torchscript"}


def check_format(fmt: str) -> Format:
    """The format named ``fmt``.

    Raises:
        UserError: an unknown format, naming those there are.
    """
    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not a format dltrain-export writes: choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def write_model(graph: ExportGraph, fmt: str, path: Path, *, verbose: bool = False) -> None:
    """Write ``graph`` to ``path`` in format ``fmt``, the exporter's own console output shown
    only when ``verbose``.

    Raises:
        UserError: the exporter failed: which format, the first line of why, and the format to try.
    """
    example = graph.inputs.example(TRACE_BATCH)
    try:
        with quiet(verbose), torch.no_grad():
            FORMATS[fmt].write(graph, example, path)
    except UserError:
        raise
    except Exception as err:  # the exporters raise many kinds; any one means this format cannot hold the model
        path.unlink(missing_ok=True)
        raise UserError(f"the model cannot be exported to format={fmt}: {first_line(err)}; try "
                        f"format={OTHER[fmt]}") from err


def load_model_file(fmt: str, path: Path, *, verbose: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The model file ``path`` of format ``fmt`` as a function of numpy inputs."""
    with quiet(verbose):
        return FORMATS[fmt].load(path)


def first_line(err: BaseException) -> str:
    """The first line of the error at the root of ``err`` (an exporter wraps the error of the
    step that failed), without terminal colours, shortened to fit in one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = next((line.strip() for line in plain.splitlines() if line.strip()), type(err).__name__)
    text = text.rstrip(".:")
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """The exporters' progress lines, warnings and log records hidden, unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
