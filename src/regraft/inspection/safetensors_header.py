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
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain, groupby, islice, repeat
from math import prod
from operator import itemgetter, le, mul, sub
from pathlib import Path
from typing import NamedTuple

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


class _Part:
    """The tensors of one validated header, as columns (no object per tensor)."""

    __slots__ = ("dtypes", "file", "names", "nbytes", "shapes")

    def __init__(self, file: str, names: list[str], dtypes: list[str], shapes: list[list[int]], nbytes: list[int]):
        self.file, self.names, self.dtypes, self.nbytes = file, names, dtypes, nbytes
        self.shapes = shapes  # the lists the header holds


class TensorTable(Mapping):
    """name -> TensorInfo over the headers of one model folder (read-only).

    Built from columns; the TensorInfo objects are made on first use of the Mapping interface. The checks read
    :attr:`shapes` (name -> shape as a list), :attr:`total_bytes` and :meth:`dtypes` instead, which need no object
    per tensor (a 235B checkpoint has 36k tensors). Like ``dict.update`` over the shards, a name in two shards keeps the later one.
    """

    __slots__ = ("_infos", "_parts", "shapes")

    def __init__(self, parts: list[_Part] = ()):
        self._parts: list[_Part] = []
        self.shapes: dict[str, list[int]] = {}  # name -> shape, the list the header holds (do not modify)
        self._infos: dict[str, TensorInfo] | None = None
        for part in parts:
            self.add(part)

    def add(self, part: _Part) -> None:
        self._parts.append(part)
        self.shapes.update(zip(part.names, part.shapes))
        self._infos = None

    def _all(self) -> dict[str, TensorInfo]:
        if self._infos is None:
            infos: dict[str, TensorInfo] = {}
            for p in self._parts:
                infos.update(zip(p.names, map(TensorInfo, p.names, p.dtypes, map(tuple, p.shapes), repeat(p.file),
                                                      p.nbytes)))
            self._infos = infos
        return self._infos

    def __getitem__(self, name: str) -> TensorInfo:
        return self._all()[name]

    def get(self, name, default=None):
        return self._all().get(name, default)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __contains__(self, name) -> bool:
        return name in self.shapes

    def keys(self):
        return self.shapes.keys()

    def values(self):
        return self._all().values()

    def items(self):
        return self._all().items()

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors in {len(self._parts)} files)"

    @property
    def total_bytes(self) -> int:
        if sum(len(p.names) for p in self._parts) == len(self.shapes):  # no name in two shards
            return sum(sum(p.nbytes) for p in self._parts)
        return sum(t.nbytes for t in self._all().values())

    def dtypes(self) -> set[str]:
        if sum(len(p.names) for p in self._parts) == len(self.shapes):
            return set().union(*(p.dtypes for p in self._parts))
        return {t.dtype for t in self._all().values()}


def total_bytes(tensors: Mapping[str, TensorInfo]) -> int:
    """Bytes of all tensors of a TensorTable or a plain {name: TensorInfo}."""
    if isinstance(tensors, TensorTable):
        return tensors.total_bytes
    return sum(t.nbytes for t in tensors.values())


def tensor_dtypes(tensors: Mapping[str, TensorInfo]) -> set[str]:
    if isinstance(tensors, TensorTable):
        return tensors.dtypes()
    return {t.dtype for t in tensors.values()}


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    bytes_read: int


def _bad(where: str, reason: str) -> FileFormatError:
    return FileFormatError(f"Cannot read safetensors header of {where}: {reason}. "
                           "The file is probably truncated or not a safetensors file; re-download or re-save it.")


def _read_part(path: Path) -> tuple[_Part, dict[str, str], int]:
    """Read and validate one .safetensors header: (tensors as columns, __metadata__, bytes read)."""
    from regraft.inspection.files import regular_file_size

    where = f"'{path.name}' (in {path.parent})"
    size = regular_file_size(path, where)
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _bad(where, f"file is {size} bytes, shorter than the 8-byte length prefix")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER:
                raise _bad(where, f"declared header length {n} is larger than the limit of {MAX_HEADER} bytes")
            if n > size - 8:
                raise _bad(where, f"declared header length {n} is larger than the rest of the file ({size - 8} bytes)")
            raw = f.read(n)
    except FileNotFoundError:
        raise InputError(f"Cannot read {where}: no such file.") from None
    except IsADirectoryError:
        raise InputError(f"Cannot read {where}: it is a directory, expected a .safetensors file.") from None
    except PermissionError:
        raise InputError(f"Cannot read {where}: permission denied.") from None
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # also integers over Python's 4300-digit limit
        raise _bad(where, f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise _bad(where, f"header is a JSON {type(doc).__name__}, expected an object")
    metadata = doc.get("__metadata__")
    if metadata is None:  # absent or null: what the safetensors library accepts
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _bad(where, "__metadata__ must map strings to strings")
    n_tensors = len(doc) - ("__metadata__" in doc)
    if any(text.count(f'"{f}"') != n_tensors for f in ("dtype", "shape", "data_offsets")):
        _check_duplicate_fields(text, where)  # counts differ: a repeated key somewhere (rare; the exact pass)
    # No '-' anywhere (a memchr): no number in the header is negative, so the sign checks can be skipped.
    data_size = size - 8 - n
    part = _validate(doc, path.name, data_size, where, unsigned="-" not in text)
    covered = sum(part.nbytes)
    if covered != data_size:  # spans are disjoint and inside the data: equal sums mean exact coverage
        raise _bad(where, f"the tensors cover {covered} of the {data_size} data bytes (a gap between tensors or "
                   "trailing bytes); the safetensors library refuses such a file")
    return part, metadata, 8 + n


_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


def _check_duplicate_fields(text: str, where: str) -> None:
    """Refuse a tensor entry that repeats a field (the safetensors library does: 'duplicate field'); a repeated
    tensor name is last-wins there as in json.loads (then the coverage check decides)."""
    def hook(pairs):
        keys = [k for k, _ in pairs]
        if _TENSOR_FIELDS & set(keys) and len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise _bad(where, f"a tensor entry repeats the field {dup!r}")
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header of one .safetensors file. Raises FileFormatError with one clear line."""
    part, metadata, nbytes = _read_part(Path(path))
    return Header(TensorTable([part])._all(), metadata, nbytes)


def parse_header_doc(doc: dict, file: str, data_size: int | None, where: str) -> dict[str, TensorInfo]:
    """Validate a parsed header; ``data_size`` None skips the bounds check (remote headers)."""
    return TensorTable([_validate(doc, file, data_size, where)])._all()


# Dtypes whose byte size is count x element size (the packed F4/F6 ones go through the exact per-tensor pass).
# Dtypes torch can hold but not compute with on CPU (no copy/cat/matmul kernels): a port that changes tensors refuses
# them up front, in one line, instead of a NotImplementedError from deep inside torch.
PACKED_DTYPES = frozenset({"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0"})


def refuse_packed(dtypes, where: str, what: str) -> None:
    """FileFormatError when any of ``dtypes`` is a packed/scale-only dtype that ``what`` cannot compute with."""
    bad = sorted(set(dtypes) & PACKED_DTYPES)
    if bad:
        raise FileFormatError(f"Cannot {what}: '{where}' stores tensors as {', '.join(bad)} (packed micro-scaling "
                              "formats torch cannot compute with here). Dequantize the adapter to BF16/F32 first.")


_WHOLE_BYTES = frozenset(k for k in DTYPE_BYTES if k not in ("F4", "F6_E2M3", "F6_E3M2"))
_DTYPE, _SHAPE, _OFFSETS = itemgetter("dtype"), itemgetter("shape"), itemgetter("data_offsets")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def _validate(doc: dict, file: str, data_size: int | None, where: str, unsigned: bool = False) -> _Part:
    """Validate every tensor entry of a parsed header and return it as columns.

    A 235B checkpoint declares 36k tensors, so the usual case is checked in whole-column passes that run in C
    (types, dtypes, dims, spans in the data region, byte sizes, overlaps); any failure there, or a case that pass
    does not cover, goes to the exact per-tensor pass, which names the first bad tensor. Both accept the same
    headers. ``unsigned``: the caller knows that no number in the header is negative.
    """
    names = list(doc)
    infos = list(doc.values())
    if "__metadata__" in doc:
        i = names.index("__metadata__")
        del names[i], infos[i]
    part = _validate_columns(names, infos, file, data_size, unsigned)
    return part if part is not None else _validate_each(names, infos, file, data_size, where)


def _validate_columns(names: list[str], infos: list, file: str, data_size: int | None,
                      unsigned: bool) -> _Part | None:
    """The bulk pass; None when anything is off or not covered (then the per-tensor pass decides)."""
    if not infos:
        return _Part(file, [], [], [], [])
    try:  # TypeError/KeyError: an entry is not an object, or lacks a key; a dtype is unhashable
        dtypes = list(map(_DTYPE, infos))
        shapes = list(map(_SHAPE, infos))
        offsets = list(map(_OFFSETS, infos))
        kinds = set(dtypes)
    except (TypeError, KeyError):
        return None
    if not kinds <= _WHOLE_BYTES or set(map(type, shapes)) != {list}:
        return None
    try:  # offsets: pairs of ints (a str or object pair passes len() but yields str items, refused below)
        if set(map(len, offsets)) != {2}:
            return None
        flat = list(chain.from_iterable(offsets))
    except TypeError:  # a number has no len()
        return None
    if not set(map(type, chain.from_iterable(shapes))) <= {int} or set(map(type, flat)) != {int}:
        return None  # (bools, floats, None, strings...; and a str dim would make prod() repeat it)
    begins, ends = flat[0::2], flat[1::2]
    if not unsigned and (min(chain.from_iterable(shapes), default=0) < 0 or min(begins) < 0):
        return None
    nbytes = list(map(sub, ends, begins))
    if len(kinds) == 1:
        expected = list(map(mul, map(prod, shapes), repeat(DTYPE_BYTES[next(iter(kinds))])))
    else:
        expected = list(map(mul, map(prod, shapes), map(DTYPE_BYTES.__getitem__, dtypes)))
    if nbytes != expected or (data_size is not None and max(ends) > data_size):
        return None  # also begin > end: a negative byte count differs from a count of non-negative dims
    # Overlaps. Headers list their tensors in file order: then begin0 <= end0 <= begin1 <= end1 ... (one pass over
    # the flat offsets) and the spans are disjoint; otherwise sort them (by begin, then end) and check neighbours,
    # like the exact pass.
    if not all(map(le, flat, islice(flat, 1, None))):
        spans = sorted(zip(begins, ends))
        if not all(map(le, map(_SECOND, spans), map(_FIRST, islice(spans, 1, None)))):
            return None
    return _Part(file, names, dtypes, shapes, nbytes)


def _validate_each(names: list[str], infos: list, file: str, data_size: int | None, where: str) -> _Part:
    """The exact pass: one tensor at a time, raising FileFormatError that names the first bad one."""

    def bad(reason: str) -> FileFormatError:
        return _bad(where, reason)

    sizes = DTYPE_BYTES
    spans = []
    dtypes, shapes, nbytes = [], [], []
    for name, info in zip(names, infos):
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
        dtypes.append(dtype)
        shapes.append(shape)
        nbytes.append(end - begin)
    spans.sort()
    for (b1, e1, n1), (b2, e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise bad(f"tensors {n1!r} and {n2!r} overlap (bytes {b1}..{e1} and {b2}..{e2})")
    return _Part(file, names, dtypes, shapes, nbytes)


def read_folder_tensors(folder: Path, index_name: str, single_name: str) -> tuple[TensorTable, int] | None:
    """Headers of a model folder: a sharded index (weight_map -> shard files) or a single file; None if neither."""
    import gc

    # Parsing a 235B checkpoint's headers makes ~200k JSON objects and no reference cycles: the cyclic collector
    # would only walk them again and again while they are built.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read_folder_tensors(folder, index_name, single_name)
    finally:
        if paused:
            gc.enable()


def _read_folder_tensors(folder: Path, index_name: str, single_name: str) -> tuple[TensorTable, int] | None:
    from regraft.inspection.files import read_json

    index = _inside(folder, index_name, folder / index_name)
    if index.is_file():
        doc = read_json(index)
        wmap = doc.get("weight_map")
        if not isinstance(wmap, dict):
            raise FileFormatError(f"Cannot read '{index.name}' (in {folder}): no 'weight_map' object. Expected a safetensors index.")
        # 36k values on a 235B index, in runs of one shard name: comparing neighbours beats hashing them all
        runs = [value for value, _ in groupby(wmap.values())]
        if set(map(type, runs)) - {str}:
            bad_shard = next(v for v in wmap.values() if not isinstance(v, str))
            raise FileFormatError(f"Cannot read '{index.name}' (in {folder}): 'weight_map' maps a tensor to "
                                  f"{bad_shard!r:.60}, expected a shard file name.")
        tensors = TensorTable()
        read = 0
        for shard in sorted(set(runs)):
            shard_path = _inside(folder, shard, index)
            part, _, n = _read_part(shard_path)
            tensors.add(part)
            read += n
        if not all(map(tensors.shapes.__contains__, wmap)):
            missing = wmap.keys() - tensors.shapes.keys()
            raise FileFormatError(f"'{index.name}' (in {folder}) lists {len(missing)} tensors not found in their shards, "
                                  f"e.g. {min(missing)!r}. The download is incomplete.")
        return tensors, read + index.stat().st_size
    single = _inside(folder, single_name, folder / single_name)
    if single.is_file():
        part, _, n = _read_part(single)
        return TensorTable([part]), n
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
