"""Read safetensors headers without loading a tensor (stdlib only).

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, then data.
Everything declared is checked against the file before it is trusted: the length prefix against the file size,
every span against the data region, spans against each other, dtype against the known set, and the byte size of
each span against dtype x shape.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

from regraft.errors import FileFormatError, InputError

MAX_HEADER = 100_000_000  # same limit as the safetensors library
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


class TensorInfo(NamedTuple):  # a NamedTuple: a 235B header has 36k of them, and tuples are cheap to build
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str  # file name (relative to its folder) that holds it
    nbytes: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    bytes_read: int


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header of one .safetensors file. Raises FileFormatError with one clear line."""
    path = Path(path)
    where = f"'{path.name}' (in {path.parent})"

    def bad(reason: str) -> FileFormatError:
        return FileFormatError(
            f"Cannot read safetensors header of {where}: {reason}. "
            "The file is probably truncated or not a safetensors file; re-download or re-save it."
        )

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise bad(f"file is {size} bytes, shorter than the 8-byte length prefix")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER:
                raise bad(f"declared header length {n} is larger than the limit of {MAX_HEADER} bytes")
            if n > size - 8:
                raise bad(f"declared header length {n} is larger than the rest of the file ({size - 8} bytes)")
            raw = f.read(n)
    except FileNotFoundError:
        raise InputError(f"Cannot read {where}: no such file.") from None
    except IsADirectoryError:
        raise InputError(f"Cannot read {where}: it is a directory, expected a .safetensors file.") from None
    except PermissionError:
        raise InputError(f"Cannot read {where}: permission denied.") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # also integers over Python's 4300-digit limit
        raise bad(f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise bad(f"header is a JSON {type(doc).__name__}, expected an object")
    metadata = doc.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("__metadata__ must map strings to strings")
    tensors = parse_header_doc(doc, path.name, size - 8 - n, where)
    return Header(tensors, metadata, 8 + n)


def parse_header_doc(doc: dict, file: str, data_size: int | None, where: str) -> dict[str, TensorInfo]:
    """Validate a parsed header; ``data_size`` None skips the bounds check (remote headers)."""

    def bad(reason: str) -> FileFormatError:
        return FileFormatError(f"Cannot read safetensors header of {where}: {reason}. "
                               "The file is probably truncated or not a safetensors file; re-download or re-save it.")

    tensors: dict[str, TensorInfo] = {}
    spans = []
    sizes = DTYPE_BYTES
    # Hot loop (36k tensors on a 235B checkpoint): plain type checks, no generators.
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        if type(info) is not dict:
            raise bad(f"entry {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if type(dtype) is not str or dtype not in sizes:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r} (known: {', '.join(sorted(sizes))})")
        if type(shape) is not list:
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}, expected a list of non-negative integers")
        count = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise bad(f"tensor {name!r} has an invalid shape {shape!r}, expected a list of non-negative integers")
            count *= d
        if type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int or type(offsets[1]) is not int:
            raise bad(f"tensor {name!r} has invalid data_offsets {offsets!r}, expected [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end or (data_size is not None and end > data_size):
            raise bad(f"tensor {name!r} spans bytes {begin}..{end}, outside the data region of {data_size} bytes")
        expected = count * sizes[dtype]
        if dtype == "F4":
            expected = (count + 1) // 2
        elif dtype in ("F6_E2M3", "F6_E3M2"):
            expected = (count * 6 + 7) // 8
        if end - begin != expected:
            raise bad(f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes but spans {end - begin}")
        spans.append((begin, end, name))
        tensors[name] = TensorInfo(name, dtype, tuple(shape), file, end - begin)
    spans.sort()
    for (b1, e1, n1), (b2, e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise bad(f"tensors {n1!r} and {n2!r} overlap (bytes {b1}..{e1} and {b2}..{e2})")
    return tensors


def read_folder_tensors(folder: Path, index_name: str, single_name: str) -> tuple[dict[str, TensorInfo], int] | None:
    """Headers of a model folder: a sharded index (weight_map -> shard files) or a single file; None if neither."""
    from regraft.inspection.files import read_json

    index = _inside(folder, index_name, folder / index_name)
    if index.is_file():
        doc = read_json(index)
        wmap = doc.get("weight_map")
        if not isinstance(wmap, dict):
            raise FileFormatError(f"Cannot read '{index.name}' (in {folder}): no 'weight_map' object. Expected a safetensors index.")
        bad_shard = next((v for v in wmap.values() if not isinstance(v, str)), None)
        if bad_shard is not None:
            raise FileFormatError(f"Cannot read '{index.name}' (in {folder}): 'weight_map' maps a tensor to "
                                  f"{bad_shard!r:.60}, expected a shard file name.")
        tensors: dict[str, TensorInfo] = {}
        read = 0
        for shard in sorted(set(wmap.values())):
            shard_path = _inside(folder, shard, index)
            h = read_header(shard_path)
            tensors.update(h.tensors)
            read += h.bytes_read
        missing = sorted(set(wmap) - set(tensors))
        if missing:
            raise FileFormatError(f"'{index.name}' (in {folder}) lists {len(missing)} tensors not found in their shards, "
                                  f"e.g. {missing[0]!r}. The download is incomplete.")
        return tensors, read + index.stat().st_size
    single = _inside(folder, single_name, folder / single_name)
    if single.is_file():
        h = read_header(single)
        return h.tensors, h.bytes_read
    return None


def _inside(folder: Path, rel: str, manifest: Path) -> Path:
    """Resolve a file named in a manifest, refusing anything outside ``folder`` (.., absolute paths, symlinks out;
    a Hugging Face cache snapshot's links into its repo's blobs/ are inside)."""
    from regraft.inspection.files import inside

    return inside(folder, rel, manifest.name)


def write_safetensors(path: str | os.PathLike, tensors: dict[str, tuple[str, tuple[int, ...], bytes]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write {name: (dtype, shape, raw bytes)} as safetensors, atomically (temporary name, then rename)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)  # align the data section like the reference writer
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for name in sorted(tensors):
                f.write(tensors[name][2])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
