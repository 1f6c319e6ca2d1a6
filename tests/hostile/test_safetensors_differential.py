"""Our safetensors header reader accepts exactly what the real `safetensors` library accepts: generated headers
with gaps before/between tensors, trailing bytes, duplicate names and fields, __metadata__ of every JSON type,
unsorted/overlapping offsets, padding; the library (safe_open) is the oracle."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

safetensors = pytest.importorskip("safetensors")

DT = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1}
META = [None, "absent", {}, {"format": "pt"}, [], "", 0, {"a": 1}, {"a": None}, {"a": ["x"]}]


@st.composite
def headers(draw):
    n = draw(st.integers(0, 4))
    entries, offset = [], 0
    for i in range(n):
        dtype = draw(st.sampled_from(sorted(DT)))
        shape = draw(st.lists(st.integers(0, 3), max_size=2))
        nb = math.prod(shape) * DT[dtype]
        gap = draw(st.sampled_from([0, 0, 0, 1, 4, -1]))
        begin = max(0, offset + gap)
        entries.append([f"t{i}", {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + nb]}])
        offset = begin + nb
    if entries and draw(st.booleans()):
        entries.reverse()  # file order differs from header order
    if entries and draw(st.integers(0, 5)) == 0:
        entries.append([entries[0][0], dict(entries[0][1])])  # a repeated tensor name
    meta = draw(st.sampled_from(META))
    fields_dup = entries and draw(st.integers(0, 6)) == 0
    parts = []
    if meta != "absent":
        parts.append(f'"__metadata__": {json.dumps(meta)}')
    for name, e in entries:
        body = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in e.items())
        if fields_dup:
            body += f', "dtype": {json.dumps(e["dtype"])}'
            fields_dup = False
        parts.append(f'"{name}": {{{body}}}')
    text = "{" + ", ".join(parts) + "}" + draw(st.sampled_from(["", "", "  ", "\n"]))
    data_len = max([e["data_offsets"][1] for _, e in entries] or [0]) + draw(st.sampled_from([0, 0, 0, 1, 8]))
    return text, data_len


@given(headers())
def test_reader_agrees_with_the_safetensors_library(tmp_path_factory, case):
    from safetensors import safe_open

    from regraft.errors import FileFormatError
    from regraft.inspection.safetensors_header import read_header

    text, data_len = case
    raw = text.encode()
    p = tmp_path_factory.mktemp("st") / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)
    try:
        with safe_open(str(p), "np"):
            pass
        lib = True
    except Exception:  # noqa: BLE001 - the library's verdict, whatever it raises
        lib = False
    try:
        read_header(p)
        ours = True
    except FileFormatError:
        ours = False
    assert ours == lib, f"library {'accepts' if lib else 'refuses'}, we {'accept' if ours else 'refuse'}: {text!r} + {data_len} bytes"
