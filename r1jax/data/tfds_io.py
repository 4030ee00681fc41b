"""Reads prepared TFDS datasets, including the `huggingface:` namespace, without TensorFlow.

tfds 4.9 addresses a hub dataset as `huggingface:owner__repo/config` (the '/' inside the repo id
becomes '__'); we also accept `huggingface:owner/repo/config`. Its own `tfds.builder` on that
namespace always builds a `HuggingfaceDatasetBuilder`, which imports the `datasets` package and
queries the hub, even when the data is already prepared. We only read: the prepared files are
found in `data_dir/owner__repo/config/VERSION/` and opened with `tfds.builder_from_directory`.

Random-access formats (array_record, parquet) are read with `as_data_source`, which needs no
TensorFlow. tfrecord shards (the default of `tfds build`) are read by a small framing reader
below and decoded with tfds' NumPy example parser, also without TensorFlow.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

HF_PREFIX = "huggingface:"


def local_tfds_name(name: str) -> str:
    """The on-disk TFDS name: 'huggingface:openai/gsm8k/main' -> 'openai__gsm8k/main'.

    A hub repo id is `owner/repo`, so with the namespace, three '/'-parts are owner/repo/config
    and two are owner/repo unless the first already has the tfds '__' form (name/config).
    """
    if not name.startswith(HF_PREFIX):
        from tensorflow_datasets.core import naming  # heavy (TensorFlow pieces): only for TFDS

        if naming.parse_builder_name_kwargs(name)[0].namespace:
            raise ValueError(f"TFDS name {name!r}: only the 'huggingface:' namespace is supported")
        return name
    from tensorflow_datasets.core.utils.conversion_utils import to_tfds_name  # heavy, as above

    parts = name[len(HF_PREFIX) :].split("/")
    if len(parts) == 3:
        repo, config = f"{parts[0]}/{parts[1]}", parts[2]
    elif len(parts) == 2 and "__" not in parts[0]:
        repo, config = f"{parts[0]}/{parts[1]}", None
    elif len(parts) in (1, 2):
        repo, config = parts[0], (parts[1] if len(parts) == 2 else None)
    else:
        raise ValueError(f"TFDS name {name!r}: expected huggingface:owner/repo[/config]")
    return to_tfds_name(repo) + (f"/{to_tfds_name(config)}" if config else "")


def _tfds_form(name: str) -> str:
    """The name as `tfds.builder` wants it: 'huggingface:openai__gsm8k/main'."""
    return HF_PREFIX + local_tfds_name(name) if name.startswith(HF_PREFIX) else name


def read_tfds(name: str, split: str, *, data_dir: str | None = None) -> list[tuple[str, dict]]:
    """All rows of a prepared TFDS split as (location, plain-Python dict) pairs."""
    import tensorflow_datasets as tfds  # heavy (TensorFlow pieces): only when TFDS is read
    from tensorflow_datasets.core import read_only_builder, registered  # heavy, as above

    local = local_tfds_name(name)
    try:
        builder = read_only_builder.builder_from_files(local, data_dir=data_dir)
    except registered.DatasetNotFoundError as e:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} (on disk: {local}) is not prepared in data_dir={data_dir!r} "
            "(None means $TFDS_DATA_DIR or ~/tensorflow_datasets). Prepare it once on a machine "
            f"with network: tfds.builder({_tfds_form(name)!r}, data_dir=..., "
            "file_format='array_record')"
            ".download_and_prepare()"
        ) from e
    if split not in builder.info.splits:
        raise ValueError(
            f"TFDS dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}"
        )
    fmt = tfds.core.FileFormat.from_value(builder.info.file_format)
    if fmt in tfds.core.FileFormat.with_random_access():
        rows = builder.as_data_source(split)
    elif fmt == tfds.core.FileFormat.TFRECORD:
        decode = builder.info.features.deserialize_example_np
        paths = builder.info.splits[split].filepaths
        rows = [decode(record) for p in paths for record in _tfrecords(p)]
    else:
        raise ValueError(
            f"TFDS dataset {name!r}: cannot read file format {fmt.value!r} "
            "without TensorFlow; rebuild it with file_format='array_record'"
        )
    return [(f"tfds {name} split {split!r}, example {i}", to_python(r)) for i, r in enumerate(rows)]


def to_python(value: Any) -> Any:
    """Decoded TFDS values (bytes, NumPy scalars and arrays) as JSON-like Python values."""
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()] if value.ndim else to_python(value.item())
    if isinstance(value, np.generic):
        return to_python(value.item())
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


# ------------------------------------------------------------------------- tfrecord without TF


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tfrecords(path) -> Iterator[bytes]:
    """Records of one TFRecord file: u64 length, u32 masked crc(length), data, u32 masked crc(data).

    Only the length checksum is verified (pure-Python CRC over every payload would be slow); a
    corrupt length, which is what breaks the framing, is caught.
    """
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header")
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc32c(header[:8]) != crc:
                raise ValueError(f"{path}: corrupt TFRecord length checksum")
            data = f.read(length + 4)
            if len(data) < length + 4:
                raise ValueError(f"{path}: truncated TFRecord payload")
            yield data[:length]


def write_tfrecords(path, records) -> None:
    """Writes TFRecord framing (used by the tests to build a tfrecord-format data_dir)."""
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc32c(length)))
            f.write(data + struct.pack("<I", masked_crc32c(data)))
