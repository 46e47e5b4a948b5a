"""``dltrain-predict`` of an autoencoder's checkpoint (``task=autoencoder``): with
``returns=latents`` (its default) one row per input with its latent code, ``input, z0 .. z<K-1>``;
with ``returns=reconstructions`` the reconstruction's mean squared error (in the model's
standardised input space, as the run's loss sees it with ``task.loss=mse``) and, for images, the
file the reconstructed image is written to (``<output's name>-reconstructions/<n>.png``, pixels
with the data's normalisation undone). The folder lists the images it holds in ``MANIFEST``: a
folder without one was not written by this tool and is never written into; a rerun replaces the
images the last run listed (none left over from a longer input), once every input is read: the new
images wait in a folder of their own beside it until then, so a run that fails leaves the earlier
images, and the CSV naming them, as they were; so does a run stopped by SIGTERM or Ctrl-C. The
hidden folder a killed run (SIGKILL, a power cut) leaves is removed by the next run of the same
output, once its mark shows that this tool made it in a process that is gone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from dltrain.errors import UserError

if TYPE_CHECKING:
    import torch

    from dltrain.inference.restore import Restored

#: What ``returns=`` may ask for: ``auto`` is the checkpoint's own kind of output.
RETURNS = ("auto", "predictions", "latents", "reconstructions")
#: The list of the images dltrain-predict wrote into a reconstructions folder: what marks it as its own.
MANIFEST = "dltrain-predict.json"
#: The file that marks a hidden folder the new images wait in as this tool's, and names the
#: process that made it: a later run removes the folder only once that process is gone.
STAGING_MARK = "dltrain-predict-staging.json"
#: The files a staging folder may hold besides its mark: the images, and atomic_write's temp
#: files of them (``.tmp-<n>.png.<pid>.<8 random>``) that a kill mid-write leaves.
_STAGED = re.compile(r"^(\d+\.png|\.tmp-\d+\.png\.\d+\.[a-z0-9_]{8})$")


def is_autoencoder(restored: Restored) -> bool:
    """Whether the checkpoint's run trained an autoencoder (``task=autoencoder``)."""
    return OmegaConf.select(restored.cfg, "task.name", default="supervised") == "autoencoder"


def resolve_returns(returns: str, restored: Restored, tool: str) -> str:
    """What to write: ``returns`` checked against the checkpoint (``auto``: latents for an
    autoencoder, predictions for any other).

    Raises:
        UserError: an unknown value, or latents/reconstructions of a model that is no autoencoder
            (and predictions of one that is).
    """
    if returns not in RETURNS:
        raise UserError(f"returns={returns} is not a choice: use {', '.join(RETURNS)}")
    autoencoder = is_autoencoder(restored)
    if returns == "auto":
        return "latents" if autoencoder else "predictions"
    if autoencoder and returns == "predictions":
        raise UserError(f"returns=predictions: {restored.path} is an autoencoder's checkpoint (task=autoencoder), "
                        "which predicts no targets: use returns=latents or returns=reconstructions")
    if not autoencoder and returns != "predictions":
        raise UserError(f"returns={returns}: {restored.path} is not an autoencoder's checkpoint (its run trained "
                        f"task={OmegaConf.select(restored.cfg, 'task.name', default='supervised')}), so it has no "
                        f"{returns}: leave returns out, or give a task=autoencoder run's checkpoint; see {tool} --help")
    return returns


def images_folder(output: Path) -> Path:
    """Where ``returns=reconstructions`` writes the reconstructed images: beside ``output``, a
    folder that is new, empty or this tool's (its :data:`MANIFEST` lists every image in it). Its
    images stay as they are until :meth:`ReconstructionImages.finish`.

    Raises:
        UserError: the folder holds something this tool did not write (not in its manifest).
    """
    folder = output.with_name(f"{output.stem}-reconstructions")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, where the reconstructed images go: move it away or choose another "
                        "output=...")
    if folder.is_dir():
        listed = _listed(folder)
        others = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in listed)
        if others:
            raise UserError(f"{folder} holds {', '.join(others[:3])}, which dltrain-predict did not write (it lists "
                            f"what it writes in {MANIFEST}): move it away or choose another output=...")
    return folder


class ReconstructionImages:
    """The images of one ``returns=reconstructions`` run, bound for ``folder``: written into a
    new hidden folder beside it while the inputs are read, moved into it by :meth:`finish`."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.names = folder, []
        self.staging: Path | None = None

    def write(self, name: str, image: Any) -> str:
        """Write the PIL ``image`` as ``name``; returns its path relative to the output's folder."""
        import tempfile

        from dltrain.files import atomic_write

        if self.staging is None:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}-", dir=self.folder.parent))
            _mark(self.staging, self.folder)
        with atomic_write(self.staging / name, "wb") as f:
            image.save(f, format="PNG")
        self.names.append(name)
        return f"{self.folder.name}/{name}"

    def finish(self) -> None:
        """Every input read: the images the last run listed give way to the new ones. The
        manifest lists both while they move, so an interrupted move leaves no unlisted image."""
        listed = _listed(self.folder) if self.folder.is_dir() else []
        _write_manifest(self.folder, [*listed, *(n for n in self.names if n not in listed)])
        for name in listed:
            if name not in self.names:
                (self.folder / name).unlink(missing_ok=True)
        for name in self.names:
            os.replace(self.staging / name, self.folder / name)
        _write_manifest(self.folder, self.names)
        self.discard()

    def discard(self) -> None:
        """Remove the new images not moved (a run that failed or was stopped), and their folder.
        A signal inside a write can leave that write's temp file, whose name nobody was told
        (it stopped in ``mkstemp``): the folder's images and temp files, all this run's, go too. A
        folder that still cannot be removed is said once, not raised over the error that ended the run."""
        if self.staging is None:
            return
        staging, self.staging = self.staging, None
        try:
            for path in staging.iterdir():
                if path.name == STAGING_MARK or (_STAGED.match(path.name) and path.is_file()
                                                 and not path.is_symlink()):
                    path.unlink(missing_ok=True)
            staging.rmdir()
        except OSError as err:
            from dltrain.inference.rows import warn

            try:
                left = sorted(p.name for p in staging.iterdir())
            except OSError:
                left = []
            holds = f"it holds {', '.join(left[:3])}{', ...' if len(left) > 3 else ''}" if left else "it is left"
            warn(f"could not remove {staging} ({err.strerror or err}): {holds}, which this run did not leave "
                 "there or could not remove: look at it before you remove it")


@contextmanager
def replaced_when_done(rows_of: Any) -> Iterator[None]:
    """Around the reading of every input: the new images replace the earlier run's only if it
    ends without an error (``rows_of`` from :func:`batch_rows`, or None: no images).

    Raises:
        Interrupted: a stop signal (SIGTERM, Ctrl-C) while the inputs were read, saying that
            nothing was written.
    """
    from dltrain.training.signals import Interrupted, signal_name

    images = getattr(rows_of, "images", None)
    try:
        yield
    except BaseException as err:
        if images is not None:
            images.discard()
        if isinstance(err, Interrupted):
            raise Interrupted(err.signum, f"stopped by {signal_name(err.signum)}: nothing written",
                              aborted=err.aborted) from None
        raise
    if images is not None:
        try:
            images.finish()
        except BaseException:  # a second signal or a failed move: the images not moved go too
            images.discard()
            raise


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the hidden folders beside ``folder`` in which runs killed before they finished
    (SIGKILL, a crash, a power cut) left their new images; returns them. Only a folder named as
    :class:`ReconstructionImages` names them, whose :data:`STAGING_MARK` says this tool made it
    for ``folder`` in a process of this machine that is gone, and which holds nothing but its
    mark, images and their temp files, is removed; one holding anything else is left as it
    is, and said so once."""
    from dltrain.inference.rows import warn

    name = re.compile(rf"^\.{re.escape(folder.name)}-[a-z0-9_]{{8}}$")  # tempfile.mkdtemp's: 8 random
    removed, left = [], []
    try:
        siblings = sorted(p for p in folder.parent.iterdir() if name.match(p.name))
    except OSError:  # no folder yet, or one that cannot be listed: nothing of ours to remove
        return []
    for staging in siblings:
        try:
            if staging.is_symlink() or not staging.is_dir() or not _made_by_gone_run(staging, folder):
                continue
            files = list(staging.iterdir())
            if others := [p.name for p in files if p.name != STAGING_MARK and
                          (not _STAGED.match(p.name) or p.is_symlink() or not p.is_file())]:
                left.append(f"{staging} (it holds {', '.join(sorted(others)[:3])})")
                continue
            for p in sorted(files, key=lambda p: p.name == STAGING_MARK):  # the mark last
                p.unlink(missing_ok=True)
            staging.rmdir()
            removed.append(staging)
        except OSError:  # another run removing it too, or one we may not change: left
            continue
    if left:
        warn(f"left {'; '.join(left)}: a killed run's images wait there beside files dltrain-predict did not "
             "write, so it is left as it is: remove it once you have what you need")
    return removed


def _mark(staging: Path, folder: Path) -> None:
    """Mark ``staging`` as the folder this process made for ``folder``'s new images."""
    import json
    import socket

    with (staging / STAGING_MARK).open("x") as f:
        json.dump({"written_by": "dltrain-predict", "folder": folder.name, "host": socket.gethostname(),
                   "pid": os.getpid()}, f)


def _made_by_gone_run(staging: Path, folder: Path) -> bool:
    """Whether ``staging``'s mark says this tool made it for ``folder`` in a process of this
    machine that no longer runs (a folder of another machine's cannot be told from a live one)."""
    import json
    import socket

    from dltrain.files import _alive

    mark = staging / STAGING_MARK
    try:
        if mark.is_symlink() or not mark.is_file() or mark.stat().st_size > 4096:
            return False
        made = json.loads(mark.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(made, dict) or made.get("written_by") != "dltrain-predict" or made.get("folder") != folder.name:
        return False
    pid = made.get("pid")
    return made.get("host") == socket.gethostname() and type(pid) is int and pid > 0 and not _alive(pid)


def _listed(folder: Path) -> list[str]:
    """The image names ``folder``'s manifest lists; none without a readable one. Only plain
    ``<n>.png`` names count: the manifest is a file anyone can edit."""
    import json

    try:
        names = json.loads((folder / MANIFEST).read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n.endswith(".png") and n[:-4].isdigit()]


def _write_manifest(folder: Path, names: list[str]) -> None:
    """List ``names`` as the images this tool wrote into ``folder`` (made if missing)."""
    from dltrain.files import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MANIFEST, {"written_by": "dltrain-predict", "images": names})


def latent_rows(model: Any, x: torch.Tensor, ids: list[Any]) -> list[dict[str, Any]]:
    """``input, z0 .. z<K-1>`` for each input of the batch ``x``."""
    codes = model.encode(x).float().reshape(len(x), -1).cpu().tolist()  # (B, K)
    return [{"input": ids[i], **{f"z{j}": float(f"{v:.6g}") for j, v in enumerate(code)}}
            for i, code in enumerate(codes)]


def reconstruction_rows(model: Any, x: torch.Tensor, ids: list[Any], pixels: Any, images: ReconstructionImages | None,
                        first: int) -> list[dict[str, Any]]:
    """``input, reconstruction_error`` (and ``reconstruction``: the image file written into
    ``images``, numbered from ``first``, for image data) for each input of the batch ``x``.

    Args:
        pixels: the checkpoint's preprocessing turning model inputs back into pixels in [0, 1]
            (``Images.pixels``), or None for inputs that are no images.
    """
    import torch

    out = model(x).float()  # (B, *input_shape)
    errors = ((out - x.float()) ** 2).reshape(len(x), -1).mean(dim=1).cpu().tolist()  # (B,)
    rows: list[dict[str, Any]] = [{"input": ids[i], "reconstruction_error": float(f"{e:.6g}")}
                                  for i, e in enumerate(errors)]
    if images is None or out.dim() != 4:
        return rows
    from PIL import Image

    drawn = (pixels(out) if pixels is not None else out).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    for i, image in enumerate(drawn):  # (C, H, W)
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        rows[i]["reconstruction"] = images.write(f"{first + i}.png", Image.fromarray(array))
    return rows


def batch_rows(kind: str, restored: Restored, output: Path) -> Any:
    """``rows(x, ids, first)``: the rows of ``returns=kind`` (``latents`` or ``reconstructions``)
    for a batch of inputs ``x`` on the model's device, the first numbered ``first``; its
    ``images`` attribute (None: none) is what :func:`replaced_when_done` finishes."""
    from dltrain.data import preprocessing

    model = restored.model
    if kind == "latents":
        return lambda x, ids, first: latent_rows(model, x, ids)
    prep = preprocessing.from_record(restored.data, restored.cfg.data, restored.path)
    pixels = getattr(prep, "pixels", None)
    images = None
    if len(restored.data["input_shape"]) == 3:
        images = ReconstructionImages(images_folder(output))
        remove_stale_staging(images.folder)  # what a killed run of this output left

    def rows(x: torch.Tensor, ids: list[Any], first: int) -> list[dict[str, Any]]:
        return reconstruction_rows(model, x, ids, pixels, images, first)

    rows.images = images  # type: ignore[attr-defined]
    return rows
