"""Reading and writing the datasets every command works on: Hub names, local files, saved datasets and webdataset
shards (img2dataset's output layout: `{key}.jpg`, `{key}.txt`, `{key}.json` in numbered `.tar` files).

All reading goes through `datasets` (`load_dataset`, `load_from_disk`), so streaming, caching and `num_proc` behave
as users of `datasets` expect; shards are written with `webdataset.ShardWriter`.

Two kinds of broken input are handled here, at the root:

* **An undecodable member of a webdataset shard.** `datasets`' webdataset builder decodes `.txt` as strict UTF-8 (and
  `.json`, `.cls`, ... with their decoders) inside its generator, so one non-UTF-8 caption stops the whole pass with an
  error that names no shard. Shards are read with `TolerantWebDataset`, the same builder whose fields are decoded one
  by one: a text field that is not UTF-8 is decoded with replacement characters (U+FFFD for each bad byte, the rest
  of the caption kept), any other field that fails its decoder becomes None, and each case is logged as a warning
  that names the shard, the sample key and the field. Streaming and non-streaming reads behave the same.
* **A dataset with no rows.** `save_to_disk` of an empty dataset writes a folder that `load_from_disk` cannot read,
  and a stream with no rows cannot be written at all: `save_dataset` refuses both with `EmptyDatasetError`, and
  `load_source` refuses an empty dataset with a message that says so, with the CAT report when `report.json` of
  `examples/filter_cat.py` lies next to it.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable

from datasets import (
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    load_dataset_builder,
    load_from_disk,
)
from datasets.filesystems import EXTENSION_TO_COMPRESSION_FS_FILE_CLS
from datasets.packaged_modules.webdataset.webdataset import WebDataset
from datasets.utils.info_utils import is_small_dataset

logger = logging.getLogger(__name__)

# The data-file suffixes `datasets` infers a builder from, which a source given as files may use; img2dataset's
# webdataset shards are `.tar` files.
DATA_FILE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl", ".arrow", ".tar")
OUTPUT_FORMATS = ("saved", "parquet", "webdataset")
# webdataset fields that hold text (datasets' `text_loads`): decoded with replacement characters when not UTF-8.
TEXT_FIELDS = ("txt", "text", "transcript")


class EmptyDatasetError(ValueError):
    """A dataset to read or write has no rows (the message says where, and why when a CAT report says it)."""


def _field_extension(field: str) -> str:
    """The data extension of a webdataset field: `txt` for `txt` and for `txt.gz`."""
    parts = field.lower().split(".")
    if len(parts) > 1 and "." + parts[-1] in EXTENSION_TO_COMPRESSION_FS_FILE_CLS:
        return parts[-2]
    return parts[-1]


def decode_shard_fields(example: dict, shard: str) -> dict:
    """Decode the raw fields of one webdataset sample with `datasets`' decoders, one at a time: a text field that is
    not UTF-8 keeps its readable part (bad bytes become U+FFFD), any other field that fails becomes None, and each
    failure is logged with the shard, the key and the field."""
    for field, value in example.items():
        if field.startswith("__") or not isinstance(value, (bytes, bytearray)):
            continue
        extension = _field_extension(field)
        decoder = WebDataset.DECODERS.get(extension)
        if decoder is None:  # images, audio, ...: bytes, decoded later by their feature
            continue
        try:
            example[field] = decoder(value)
        except Exception as error:  # one bad member must not stop the pass over every shard
            text = extension in TEXT_FIELDS
            example[field] = bytes(value).decode("utf-8", errors="replace") if text else None
            logger.warning("shard %s, sample %r: field %r could not be decoded (%s: %s); %s", shard,
                           example.get("__key__"), field, type(error).__name__, error,
                           "bad bytes replaced by U+FFFD" if text else "set to None")
    return example


class TolerantWebDataset(WebDataset):
    """`datasets`' webdataset builder, with each field decoded on its own (`decode_shard_fields`), so that one
    undecodable member is a logged, named repair instead of the end of the pass."""

    DECODERS: dict = {}  # the base pipeline leaves every field raw; decode_shard_fields decodes them

    @classmethod
    def _get_pipeline_from_tar(cls, tar_path, tar_iterator):
        for example in super()._get_pipeline_from_tar(tar_path, tar_iterator):
            yield decode_shard_fields(example, tar_path)


def _load(path: str, *, name=None, split=None, data_files=None, streaming: bool, cache_dir):
    """What `datasets.load_dataset` does (resolve a builder, then stream or prepare and read it), with webdataset
    sources read through `TolerantWebDataset` and an empty split refused as such (datasets would say
    'Instruction "train" corresponds to no data!')."""
    builder = load_dataset_builder(path, name, data_files=data_files, cache_dir=cache_dir)
    if isinstance(builder, WebDataset):
        builder = TolerantWebDataset(
            cache_dir=cache_dir, dataset_name=builder.dataset_name, config_name=builder.config.name,
            hash=builder.hash, base_path=builder.base_path, info=builder.info, data_files=builder.config.data_files,
            repo_id=builder.repo_id, token=builder.token, storage_options=builder.storage_options)
    if streaming:
        return builder.as_streaming_dataset(split=split)
    builder.download_and_prepare()
    try:
        return builder.as_dataset(split=split, in_memory=is_small_dataset(builder.info.dataset_size))
    except ValueError as error:
        if "corresponds to no data" in str(error):
            _refuse_empty(path)
        raise


def _cat_report_near(path: Path) -> str:
    """What a `report.json` of `examples/filter_cat.py` next to `path` says about the removed pairs ("" if none)."""
    for candidate in (path / "report.json", path.parent / "report.json"):
        if not candidate.is_file():
            continue
        try:
            report = json.loads(candidate.read_text()).get("report", {})
        except (ValueError, AttributeError):
            continue
        removed = {k[len("removed_by_"):]: v for k, v in report.items() if k.startswith("removed_by_") and v}
        if "total" in report and removed:
            rules = ", ".join(f"{rule} {count}" for rule, count in removed.items())
            return f" — CAT removed all {report['total']} pairs ({candidate}): {rules}"
    return ""


def _refuse_empty(source: str) -> None:
    path = Path(source).expanduser()
    raise EmptyDatasetError(f"the dataset at {source} has no rows{_cat_report_near(path)}")


def load_source(source: str | os.PathLike | list[str], *, split: str = "train", streaming: bool = False,
                cache_dir: str | None = None, name: str | None = None,
                limit: int | None = None) -> Dataset | IterableDataset:
    """Open a dataset given on a command line: what `datasets.load_dataset` opens, plus saved datasets.

    `datasets` infers the format itself (parquet, csv, json, arrow, webdataset `.tar` shards, image folders with one
    sub-folder per class); this function only routes the source to the right call and makes the errors say which
    path is wrong instead of falling through to a Hub lookup.

    Args:
        source: a folder written by `save_to_disk`; a folder of data files, webdataset shards (img2dataset) or
            images (`imagefolder`: one sub-folder per class gives a `label` ClassLabel column); a data file, a glob
            of them or a list of them; or a Hub dataset name (`"user/name"`).
        split: the split to read. A folder without split sub-folders has only `train`, which is returned for any
            requested split (an image folder of test images, say).
        streaming: return a lazy `IterableDataset` (a saved dataset is streamed with `to_iterable_dataset()`).
        cache_dir: `datasets` cache folder for files and Hub datasets.
        name: the configuration of a Hub dataset.
        limit: only the first `limit` rows (a trial run).

    Returns:
        A `Dataset`, or an `IterableDataset` with `streaming=True`.

    Raises:
        FileNotFoundError: a local path (or glob) that does not exist or holds no data files.
        EmptyDatasetError: the dataset (not a stream) has no rows; the message adds the CAT report found next to it.
        ValueError: files of several formats, or a split the data does not have.
    """
    dataset = _open_source(source, split=split, streaming=streaming, cache_dir=cache_dir, name=name)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        _refuse_empty(os.fspath(source) if not isinstance(source, (list, tuple)) else str(source[0]))
    if limit is None:
        return dataset
    return dataset.take(limit) if isinstance(dataset, IterableDataset) else dataset.select(range(min(limit,
                                                                                                   len(dataset))))


def _looks_local(source: str) -> bool:
    """A path the user meant as local (a Hub id is `name` or `user/name`, without a file suffix)."""
    return (source.startswith((".", "/", "~")) or source.count("/") > 1
            or source.lower().endswith(DATA_FILE_SUFFIXES) or any(c in source for c in "*?["))


def _open_source(source, *, split, streaming, cache_dir, name) -> Dataset | IterableDataset:
    if isinstance(source, (list, tuple)):
        return _from_files([str(f) for f in source], split=split, streaming=streaming, cache_dir=cache_dir)
    source = os.fspath(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            state = path / "state.json"
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                _refuse_empty(source)  # load_from_disk fails on it with an IndexError
            dataset = load_from_disk(str(path))
            if isinstance(dataset, DatasetDict):
                dataset = _pick_split(dataset, split, source)
            return dataset.to_iterable_dataset() if streaming else dataset
        try:
            splits = _load(str(path.resolve()), streaming=streaming, cache_dir=cache_dir)
        except FileNotFoundError as error:  # datasets' EmptyDatasetError: no file it can read
            raise FileNotFoundError(f"{source}: no saved dataset, data files or images found there ({error})"
                                    ) from error
        return _pick_split(splits, split, source)
    if path.is_file() or any(c in source for c in "*?["):
        files = [source] if path.is_file() else sorted(glob.glob(os.path.expanduser(source)))
        if not files:
            raise FileNotFoundError(f"{source}: no file matches")
        return _from_files(files, split=split, streaming=streaming, cache_dir=cache_dir)
    if _looks_local(source):
        raise FileNotFoundError(f"{source}: no such file or folder (a Hub dataset name looks like 'user/name')")
    return _load(source, name=name, split=split, streaming=streaming, cache_dir=cache_dir)


def _from_files(files: list[str], *, split, streaming, cache_dir) -> Dataset | IterableDataset:
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such file")
    suffixes = {Path(f).suffix.lower() for f in files}
    if len(suffixes) != 1:  # datasets would read every file with the builder of the first one
        raise ValueError(f"the files mix formats {sorted(suffixes)}; point at one kind")
    files = [str(Path(f).resolve()) for f in files]
    base = os.path.commonpath([str(Path(f).parent) for f in files])
    return _load(base, data_files={split: files}, split=split, streaming=streaming, cache_dir=cache_dir)


def _pick_split(splits, split: str, source: str):
    if split in splits:
        return splits[split]
    if list(splits) == ["train"]:  # a folder without split sub-folders
        return splits["train"]
    raise ValueError(f"{source} has the splits {sorted(splits)}, not {split!r}")


def undecoded(dataset: Dataset | IterableDataset, image_column: str) -> Dataset | IterableDataset:
    """The dataset with its `Image()` column cast to `Image(decode=False)` (cells stay `{"bytes", "path"}`)."""
    feature = (dataset.features or {}).get(image_column)
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column(image_column, Image(decode=False))
    return dataset


def _image_bytes(cell: Any) -> bytes | None:
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return cell["bytes"]
        return Path(cell["path"]).read_bytes() if cell.get("path") else None
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if hasattr(cell, "save"):  # a PIL image
        buffer = io.BytesIO()
        cell.convert("RGB").save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()
    return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def write_shards(rows: Iterable[dict], folder: str, *, image_column: str, caption_column: str | None,
                 shard_size: int = 10_000) -> list[str]:
    """Write rows as img2dataset-style webdataset shards `folder/00000.tar, ...`.

    Each sample holds `{key}.jpg` (the original image bytes, re-encoded only for in-memory PIL images),
    `{key}.txt` (the caption) and `{key}.json` (every other JSON-serialisable column).

    Returns:
        The shard paths (none for no rows).
    """
    import webdataset

    os.makedirs(folder, exist_ok=True)
    written = 0
    with webdataset.ShardWriter(os.path.join(folder, "%05d.tar"), maxcount=shard_size, verbose=0) as sink:
        for index, row in enumerate(rows):
            written += 1
            key = str(row.get("__key__") or f"{index:09d}")
            sample = {"__key__": key}
            data = _image_bytes(row.get(image_column))
            if data is not None:
                sample["jpg"] = data
            if caption_column is not None and isinstance(row.get(caption_column), str):
                sample["txt"] = row[caption_column]
            meta = dict(row["json"]) if isinstance(row.get("json"), dict) else {}  # metadata read from shards
            meta.update({k: v for k, v in row.items()
                         if k not in (image_column, caption_column, "json", "__key__", "__url__") and _jsonable(v)})
            sample["json"] = json.dumps(meta).encode()
            sink.write(sample)
    shards = sorted(glob.glob(os.path.join(folder, "*.tar")))
    if not written:  # no rows: no shard (an empty tar is no webdataset)
        for shard in shards:
            os.remove(shard)
        return []
    return shards


def save_dataset(dataset: Dataset | IterableDataset, output_dir: str, *, format: str, image_column: str,
                 caption_column: str | None = None, features: Features | None = None) -> str:
    """Write `dataset` under `output_dir` as a saved dataset (`data/`), parquet (`data.parquet`) or shards
    (`shards/`). A stream is consumed once, in this process; returns the path written.

    Raises:
        EmptyDatasetError: the dataset has no rows; nothing is left under `output_dir` (an empty saved dataset
            is a folder that `load_from_disk` cannot read).
    """
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise EmptyDatasetError(f"nothing to write to {output_dir}: the dataset has no rows")
    if format == "webdataset":
        folder = os.path.join(output_dir, "shards")
        if not write_shards(dataset, folder, image_column=image_column, caption_column=caption_column):
            shutil.rmtree(folder, ignore_errors=True)
            raise EmptyDatasetError(f"nothing to write to {folder}: the stream had no rows")
        return folder
    cache = os.path.join(output_dir, ".generator_cache")
    if isinstance(dataset, IterableDataset):
        # A fresh generation every time (the nonce defeats the generator cache): a stream's live report counts
        # only the rows that actually flow through it.
        stream, rows = dataset, _Counted()
        try:
            dataset = Dataset.from_generator(_rows, gen_kwargs={"stream": stream, "nonce": uuid.uuid4().hex,
                                                                "counted": rows},
                                             features=features or stream.features, cache_dir=cache)
        except Exception:
            shutil.rmtree(cache, ignore_errors=True)
            if rows.finished and rows.count == 0:  # datasets: 'Instruction "train" corresponds to no data!'
                raise EmptyDatasetError(f"nothing to write to {output_dir}: the stream had no rows") from None
            raise
    if format == "saved":
        path = os.path.join(output_dir, "data")
        dataset.save_to_disk(path)
    else:
        path = os.path.join(output_dir, "data.parquet")
        dataset.to_parquet(path)
    shutil.rmtree(cache, ignore_errors=True)
    return path


class _Counted:
    """How many rows a generator yielded (in this process), and whether it ran to its end."""

    def __init__(self):
        self.count, self.finished = 0, False

    def __reduce__(self):  # the generator cache fingerprints gen_kwargs: hash it as a fresh counter
        return (_Counted, ())


def _rows(stream: IterableDataset, nonce: str, counted: _Counted | None = None):
    for row in stream:
        if counted is not None:
            counted.count += 1
        yield row
    if counted is not None:
        counted.finished = True
