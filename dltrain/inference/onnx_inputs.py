"""The inputs of an exported model (``dltrain-export``), read from the user's files as the
checkpoint's own ``dltrain-predict`` reads them: the same fitted preprocessing, rebuilt from
``model.json``'s data record, reads the same rows and images with the same ids and flags, and
stops short of what the exported graph does itself (scaling, encoding). One reader per kind of
input (:data:`READERS`); each gives batches ``(ids, raw inputs, flags)`` as the graph's input
tensor (see ``model.json``'s ``input``). Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dltrain.data.preprocessing import KINDS, Images, InkCounts, Points, Preprocessing, Table, Text
from dltrain.data.preprocessing.base import Warn, batched
from dltrain.data.preprocessing.images import decoded_images
from dltrain.data.preprocessing.text import TOKEN, UNK_ID
from dltrain.errors import UserError
from dltrain.export.contract import CARD

#: The largest vocab.txt read (a vocabulary of millions of tokens is far below it).
MAX_VOCABULARY_BYTES = 256 << 20

#: One batch of raw inputs: their ids, the graph's input array and each input's flags.
RawBatch = tuple[list[Any], np.ndarray, list[str]]
#: Reads ``path`` with a kind's preprocessing, in batches, given ``model.json``'s ``input``.
Reader = Callable[[Any, Mapping[str, Any], Path, int, Warn], Iterator[RawBatch]]


def read_raw(card: Mapping[str, Any], folder: Path, path: Path, batch_size: int, warn: Warn) -> Iterator[RawBatch]:
    """Batches of the inputs in ``path`` for the exported model that ``card`` (``model.json``,
    in ``folder``) describes.

    Raises:
        UserError: inputs that cannot be read or do not match the training data, or a
            ``model.json`` whose records cannot be used.
    """
    spec = card["input"]
    prep = preprocessing(card, folder)
    batches = READERS[spec["kind"]](prep, spec, path, batch_size, warn)
    while True:
        try:
            ids, x, flags = next(batches)
        except StopIteration:
            return
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001  (a record entry of a type its reader cannot use)
            raise UserError(f"{folder / CARD}: its data record cannot be used ({type(err).__name__}: "
                            f"{_short(str(err))}): the file was changed after dltrain-export wrote it; export the "
                            "checkpoint again") from None
        yield ids, x.astype(spec["dtype"], copy=False), flags  # float32 in an export of an earlier dltrain


def preprocessing(card: Mapping[str, Any], folder: Path) -> Preprocessing:
    """The fitted preprocessing that ``card``'s data record holds, with the options its
    ``input`` entries give (the CSV's delimiter, the tokenizer, the vocabulary file).

    Raises:
        UserError: naming ``model.json`` and the entry that cannot be used.
    """
    spec, record = card["input"], dict(card["data"])
    where = folder / CARD
    options = {"delimiter": spec.get("delimiter", ",")}
    if spec["kind"] == "text":
        options |= _text_options(spec, where)
        record["vocabulary"] = _vocabulary(folder / spec["vocabulary_file"], record.get("vocab_size"), where)
    try:
        return KINDS[spec["kind"]].from_record(record, options, where)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001  (any entry of the record may be of any type: one line for each)
        raise UserError(f"{where}: its data record cannot be read ({type(err).__name__}: {_short(str(err))}): the file "
                        "was changed "
                        "after dltrain-export wrote it; export the checkpoint again") from None


def _text_options(spec: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """The :class:`Text` options ``model.json`` records: lowercase and ``max_length``."""
    tokenizer = spec.get("tokenizer") or {}
    if tokenizer.get("pattern") != TOKEN.pattern:
        raise UserError(f"{where}: its tokenizer pattern {tokenizer.get('pattern')!r} is not the one this dltrain "
                        f"tokenizes with ({TOKEN.pattern!r}): use the dltrain version that exported it")
    if spec.get("unk_id", UNK_ID) != UNK_ID or spec.get("pad_id", 0) != 0:
        raise UserError(f"{where}: its pad_id and unk_id are not 0 and 1, the ids dltrain encodes with: use the "
                        "dltrain version that exported it")
    return {"lowercase": tokenizer["lowercase"], "max_length": spec["max_length"]}


def _vocabulary(path: Path, size: Any, where: Path) -> list[str]:
    """The tokens of ``vocab.txt`` (a regular file of at most :data:`MAX_VOCABULARY_BYTES` in the
    model's folder), line i = token id i, as many as the data record's ``vocab_size``.

    Raises:
        UserError: the file is missing, not a regular file, too large, not UTF-8 text, or holds
            another number of tokens than the graph's embedding has rows.
    """
    try:
        if not path.is_file() or path.is_symlink():
            raise OSError(f"{path.name} is not a file in the model's folder")
        if path.stat().st_size > MAX_VOCABULARY_BYTES:
            raise OSError(f"larger than {MAX_VOCABULARY_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read ({getattr(err, 'strerror', None) or err}): the exported text model "
                        "reads its vocabulary from it; export the checkpoint again") from None
    tokens = text.removesuffix("\n").split("\n")
    if type(size) is not int or len(tokens) != size:
        raise UserError(f"{path} holds {len(tokens)} tokens, and {where} says the model has {_short(size)} "
                        "(data.vocab_size): keep the files dltrain-export wrote together, or export the checkpoint "
                        "again")
    return tokens


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pixels(prep: Images | InkCounts, spec: Mapping[str, Any], path: Path, batch_size: int,
            warn: Warn) -> Iterator[RawBatch]:
    """Images decoded as the checkpoint's preprocessing decodes them, as float32 pixels 0..255
    ``(N, C, H, W)``: ink counts too are pixels here (the graph rounds them to counts)."""
    for ids, images, flags in decoded_images(path, batch_size, prep.image_size, prep.color, prep.to_record(), warn):
        yield ids, images.astype(np.float32), flags


def _table(prep: Table, spec: Mapping[str, Any], path: Path, batch_size: int, warn: Warn) -> Iterator[RawBatch]:
    """The feature columns in training order, float64 ``(N, F)``: a numeric column's number
    (gaps filled as in training), a categorical column's index in its ``categories``, -1 for
    a category not in them."""
    x, flags = prep.rows(path, warn)
    categories = {column["name"]: column.get("categories") for column in spec["columns"]}
    features = np.empty((len(x), len(prep.features)), dtype=np.float64)
    for j, column in enumerate(prep.features):
        known = categories.get(str(column))
        if known is None:
            features[:, j] = x[column].to_numpy(dtype=np.float64)
        else:
            index = {category: i for i, category in enumerate(known)}
            features[:, j] = [index.get(cell, -1) for cell in x[column].astype(str)]
    yield from batched(features, flags, batch_size)


def _text(prep: Text, spec: Mapping[str, Any], path: Path, batch_size: int, warn: Warn) -> Iterator[RawBatch]:
    """Token ids int64 ``(N, L)``, padded with 0 at the end as the checkpoint's reader pads them."""
    ids, flags = prep.token_ids(path)
    yield from batched(ids, flags, batch_size)


def _points(prep: Points, spec: Mapping[str, Any], path: Path, batch_size: int, warn: Warn) -> Iterator[RawBatch]:
    """The numeric columns in order, float64 ``(N, D)`` in their own units."""
    cells, flags = prep.cells(path)
    yield from batched(cells.astype(np.float64), flags, batch_size)


#: Each kind of input's reader, by the kind ``model.json``'s ``input`` names.
READERS: dict[str, Reader] = {"images": _pixels, "ink_counts": _pixels, "table": _table, "text": _text,
                              "points": _points}
