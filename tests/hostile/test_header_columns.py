"""The safetensors header is validated in two passes: whole-column passes for speed, and the exact per-tensor pass
that names the first bad tensor. Whatever the column pass accepts, the exact pass must accept identically; whatever
it refuses goes to the exact pass. Checked here on seeded, mostly-broken headers (and end to end on files)."""

from __future__ import annotations

import json
import random
import struct

import pytest

from regraft.errors import FileFormatError
from regraft.inspection.safetensors_header import (
    DTYPE_BYTES,
    _validate,
    _validate_columns,
    _validate_each,
    read_header,
)

ODD = [0, 1, 2, -1, 1.0, True, False, None, "1", [1], {}, 10**20, 4]


def _entry(r: random.Random, off: int) -> tuple[object, int]:
    dtype = r.choice(list(DTYPE_BYTES)) if r.random() < 0.9 else r.choice(["X", 3, None, [], {}, "BF16"])
    shape: object = [r.choice([0, 1, 2, 3, 4]) for _ in range(r.randint(0, 3))]
    if r.random() < 0.1:
        shape = r.choice([5, "ab", {}, None, [1, 2.0], [True], [-1, -2], [[1]], ["a", 3], ["a", 10**9]])
    elif r.random() < 0.1 and shape:
        shape[r.randrange(len(shape))] = r.choice(ODD)
    count = 1
    for d in shape if isinstance(shape, list) else []:
        count *= d if type(d) is int else 1
    nbytes = count * (DTYPE_BYTES.get(dtype, 1) if isinstance(dtype, str) else 1)
    if dtype == "F4":
        nbytes = (count + 1) // 2
    elif dtype in ("F6_E2M3", "F6_E3M2"):
        nbytes = (count * 6 + 7) // 8
    begin = off + (r.choice([-1, 1, -3]) if r.random() < 0.1 else 0)
    end = begin + nbytes + (r.choice([-1, 1]) if r.random() < 0.1 else 0)
    offsets: object = [begin, end]
    if r.random() < 0.05:
        offsets = r.choice([[begin], [begin, end, 1], "ab", {"0": 1, "1": 2}, None, 7, [float(begin), end],
                            [begin, True], [str(begin), end]])
    info: object = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    if r.random() < 0.03:
        del info[r.choice(list(info))]
    if r.random() < 0.02:
        info = r.choice([[1, 2], "x", 3, None])
    return info, end


def _doc(r: random.Random) -> tuple[dict, int | None]:
    doc, off = {}, 0
    for i in range(r.randint(0, 6)):
        info, end = _entry(r, off)
        doc[f"t{i}"] = info
        off = max(off, end) if r.random() < 0.9 else r.randint(0, off + 1)
    if r.random() < 0.2:
        items = list(doc.items())
        r.shuffle(items)
        doc = dict(items)
    return doc, r.choice([None, off, off + 1, max(0, off - 1)])


@pytest.mark.parametrize("seed", range(4))
def test_column_pass_accepts_only_what_the_exact_pass_accepts(seed):
    r = random.Random(seed)
    accepted = fast = 0
    for _ in range(3000):
        doc, data_size = _doc(r)
        names, infos = list(doc), list(doc.values())
        unsigned = "-" not in json.dumps(doc)
        try:
            exact = _validate_each(names, infos, "f", data_size, "w")
        except FileFormatError:
            exact = None
        for flag in {False, unsigned}:
            part = _validate_columns(names, infos, "f", data_size, flag)
            if part is not None:
                fast += 1
                assert exact is not None, doc
                assert (part.names, part.dtypes, part.shapes, part.nbytes) == \
                       (exact.names, exact.dtypes, exact.shapes, exact.nbytes), doc
        accepted += exact is not None
        try:
            got = _validate(doc, "f", data_size, "w", unsigned)
        except FileFormatError:
            got = None
        assert (got is None) == (exact is None), doc
    assert fast > 300 and accepted > 300  # both outcomes are exercised


def _file(path, doc: dict, data: int) -> str:
    blob = json.dumps(doc).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + data)
    return str(path)


@pytest.mark.parametrize("doc, needle", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
      "b": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}, "overlap"),  # out of file order
    ({"a": {"dtype": "F32", "shape": [-2, -1], "data_offsets": [0, 8]}}, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, "outside the data region"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "outside the data region"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]}}, "invalid data_offsets"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": ["a", 1000000000], "data_offsets": [0, 4]}}, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": {}, "data_offsets": [0, 4]}}, "invalid shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": "ab"}}, "invalid data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, "needs 8 bytes"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}, "outside the data region"),
])
def test_bad_spans_and_shapes_are_refused_with_the_tensor_named(tmp_path, doc, needle):
    with pytest.raises(FileFormatError, match=needle):
        read_header(_file(tmp_path / "x.safetensors", doc, 16))


def test_zero_sized_tensors_and_any_file_order_are_accepted(tmp_path):
    doc = {"b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
           "z": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
           "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "f4": {"dtype": "F4", "shape": [3], "data_offsets": [16, 18]}}
    h = read_header(_file(tmp_path / "x.safetensors", doc, 18))
    assert {n: (t.shape, t.nbytes) for n, t in h.tensors.items()} == {"b": ((2,), 8), "z": ((0,), 0), "a": ((2,), 8),
                                                                      "f4": ((3,), 2)}
