"""``regraft drift A B``: how far apart two checkpoints of the same shapes are, streamed with bounded memory.

For every tensor present in both (same name, same shape) the two files are read side by side in chunks of at most
``chunk_elems`` values (plain file reads at the offsets the safetensors headers give; no mmap, no whole-shard
load), shard by shard in file order, and reduced in float64 to:

- relative Frobenius distance ``||A - B||_F / ||A||_F`` per module;
- ``sigma = sum|A - B| / (sum|A| + sum|B|)`` (the Qwen ``sigma_v2.py`` measure: Qwen3-4B-Base vs
  Instruct-2507 = 0.056), per module and over the whole model.

Lineage verdict from the overall sigma: ``same weights`` (sigma <= 1e-4: identical or a re-cast),
``siblings`` (sigma <= 0.30: one trunk, different post-training), ``unrelated`` (above). The copy rule of
The copy rule (docs/transfer.md, auto) is separate and stricter: same shapes and sigma <= 0.15 -> copy the adapter.
Values are widened to float32 (exact for bf16/f16) and every sum is accumulated in float64. Peak memory is a few
chunks (default 1M values: ~20 MB), whatever the model size.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import InputError

SAME_MAX = 1e-4
SIBLING_MAX = 0.30
COPY_MAX = 0.15
CHUNK = 1024 * 1024
_FLOAT = {"F32", "F16", "BF16", "F64"}
_LAYER = re.compile(r"layers\.(\d+)\.")


@dataclass
class Stat:
    name: str
    numel: int = 0
    d2: float = 0.0
    a2: float = 0.0
    b2: float = 0.0
    d1: float = 0.0
    a1: float = 0.0
    b1: float = 0.0
    dmax: float = 0.0

    def add(self, o: "Stat") -> None:
        for k in ("numel", "d2", "a2", "b2", "d1", "a1", "b1"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.dmax = max(self.dmax, o.dmax)

    @property
    def rel_fro(self) -> float:
        return math.sqrt(self.d2) / math.sqrt(self.a2) if self.a2 > 0 else (0.0 if self.d2 == 0 else math.inf)

    @property
    def sigma(self) -> float:
        den = self.a1 + self.b1
        return self.d1 / den if den > 0 else 0.0

    @property
    def layer(self) -> int | None:
        m = _LAYER.search(self.name + ".")
        return int(m.group(1)) if m else None

    @property
    def role(self) -> str:
        """The name inside its decoder layer (``self_attn.q_proj``), or the whole name outside layers."""
        m = _LAYER.search(self.name + ".")
        return (self.name + ".")[m.end():].rstrip(".") or self.name if m else self.name

    def to_dict(self) -> dict:
        return {"module": self.name, "numel": self.numel, "rel_fro": self.rel_fro, "sigma": self.sigma,
                "max_abs_diff": self.dmax}


ROLE_ORDER = ("input_layernorm", "q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm",
              "post_attention_layernorm", "gate_proj", "up_proj", "down_proj", "router", "experts.gate_up_proj",
              "experts.gate_proj", "experts.up_proj", "experts.down_proj", "shared_expert.gate_proj",
              "shared_expert.up_proj", "shared_expert.down_proj", "shared_expert_gate")
_EXPERT = re.compile(r"experts\.\d+\.")


def short_role(role: str) -> str:
    """``self_attn.q_proj`` -> ``q_proj``; ``mlp.experts.7.down_proj`` -> ``experts.down_proj``; ``mlp.gate`` ->
    ``router``."""
    r = _EXPERT.sub("experts.", role).removesuffix(".weight")
    for pre in ("self_attn.", "mlp.", "block_sparse_moe.", "feed_forward."):
        r = r.removeprefix(pre)
    return {"gate": "router", "shared_experts.gate_proj": "shared_expert.gate_proj"}.get(r, r)


@dataclass
class DriftReport:
    a: str
    b: str
    modules: list[Stat]
    total: Stat
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    peak_buffer_bytes: int = 0

    @property
    def sigma(self) -> float:
        return self.total.sigma

    @property
    def verdict(self) -> str:
        if self.shape_mismatch:
            return "different shapes"
        s = self.sigma
        if self.total.dmax == 0 or s <= SAME_MAX:
            return "same weights"
        return "siblings" if s <= SIBLING_MAX else "unrelated"

    @property
    def relation(self) -> str:
        """In the vocabulary of regraft.checks.lineage: same | sibling | unrelated."""
        return {"same weights": "same", "siblings": "sibling"}.get(self.verdict, "unrelated")

    @property
    def copy_ok(self) -> bool:
        return not self.shape_mismatch and self.sigma <= COPY_MAX

    def summary(self) -> dict:
        rel = sorted(m.rel_fro for m in self.modules)
        return {"a": self.a, "b": self.b, "verdict": self.verdict, "relation": self.relation,
                "sigma": self.sigma, "rel_fro": self.total.rel_fro,
                "rel_fro_median": rel[len(rel) // 2] if rel else None, "rel_fro_max": rel[-1] if rel else None,
                "copy_rule": f"{'copy' if self.copy_ok else 'do not copy'} (sigma {self.sigma:.4f} "
                             f"{'<=' if self.copy_ok else '>'} {COPY_MAX})",
                "modules": len(self.modules), "only_in_a": len(self.only_a), "only_in_b": len(self.only_b),
                "shape_mismatch": self.shape_mismatch[:20], "bytes_read": self.bytes_read,
                "seconds": round(self.seconds, 3),
                "seconds_per_gb": round(self.seconds / (self.bytes_read / 1e9), 3) if self.bytes_read else None,
                "peak_buffer_bytes": self.peak_buffer_bytes}

    def to_dict(self) -> dict:
        return {**self.summary(), "per_module": [m.to_dict() for m in self.modules],
                "per_layer": self.per_layer()}

    def per_role(self) -> dict[str, dict[int, float]]:
        """role -> {layer: rel_fro} with the routed experts of a role pooled (||sum d||/||sum a|| over experts) and
        roles named short (``q_proj``, ``experts.gate_proj``, ``input_layernorm``): what the drift plot draws."""
        pooled: dict[str, dict[int, Stat]] = {}
        for m in self.modules:
            if m.layer is None:
                continue
            role = short_role(m.role)
            st = pooled.setdefault(role, {}).setdefault(m.layer, Stat(role))
            st.add(m)
        order = {r: i for i, r in enumerate(ROLE_ORDER)}
        return {r: {i: st.rel_fro for i, st in sorted(d.items())}
                for r, d in sorted(pooled.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))}

    def per_layer_total(self) -> dict[int, float]:
        """layer -> rel_fro of all its tensors together."""
        pooled: dict[int, Stat] = {}
        for m in self.modules:
            if m.layer is not None:
                pooled.setdefault(m.layer, Stat(str(m.layer))).add(m)
        return {i: st.rel_fro for i, st in sorted(pooled.items())}

    def per_layer(self) -> dict[str, dict[int, float]]:
        """role -> {layer: rel_fro}."""
        out: dict[str, dict[int, float]] = {}
        for m in self.modules:
            if m.layer is not None:
                out.setdefault(m.role, {})[m.layer] = m.rel_fro
        return out


def _tensors(folder: Path) -> dict:
    from regraft.inspection.safetensors_header import read_folder_tensors

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"Cannot measure drift of '{folder}': not a folder. drift needs local model folders.")
    found = read_folder_tensors(folder, "model.safetensors.index.json", "model.safetensors")
    if not found:
        raise InputError(f"'{folder}' has no model.safetensors (or index): drift needs local safetensors weights.")
    return found[0]


def _offsets(folder: Path, file: str) -> tuple[int, dict]:
    import json
    import struct

    with open(folder / file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        doc = json.loads(f.read(n))
    return 8 + n, {k: v["data_offsets"] for k, v in doc.items() if k != "__metadata__"}


def _to_float(raw, dtype: str):
    """Raw little-endian bytes -> float32 (float64 for F64 tensors), without an intermediate float64 copy."""
    import numpy as np

    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4")
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if dtype == "F64":
        return np.frombuffer(raw, dtype="<f8")
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype="<u2")
        out = np.empty(u.shape, dtype=np.uint32)
        np.left_shift(u, 16, out=out, dtype=np.uint32)
        return out.view(np.float32)
    raise ValueError(dtype)


def _module_of(name: str) -> str:
    for suf in (".weight", ".bias"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def drift(a: str | Path, b: str | Path, modules=None, chunk_elems: int = CHUNK, progress=None) -> DriftReport:
    """Stream two local checkpoints and measure per-module drift. ``progress(done_bytes, total_bytes)``."""
    import numpy as np

    t0 = time.perf_counter()
    a, b = Path(a).expanduser(), Path(b).expanduser()
    ta, tb = _tensors(a), _tensors(b)
    common = [k for k in ta if k in tb]
    rep = DriftReport(str(a), str(b), [], Stat("(all)"))
    rep.only_a = sorted(set(ta) - set(tb))
    rep.only_b = sorted(set(tb) - set(ta))
    rep.shape_mismatch = sorted(k for k in common if ta[k].shape != tb[k].shape)
    todo = [k for k in common if ta[k].shape == tb[k].shape and ta[k].dtype in _FLOAT and tb[k].dtype in _FLOAT]
    if modules:
        todo = [k for k in todo if any(m in k for m in modules)]
    if not todo and not rep.shape_mismatch:
        raise InputError(f"'{a}' and '{b}' share no floating-point tensor names: not two checkpoints of one "
                         "architecture.")
    offs_a: dict[str, tuple[int, dict]] = {}
    offs_b: dict[str, tuple[int, dict]] = {}
    # file order of A: shard by shard, offset by offset (sequential reads)
    for f in {ta[k].file for k in todo}:
        offs_a[f] = _offsets(a, f)
    for f in {tb[k].file for k in todo}:
        offs_b[f] = _offsets(b, f)
    todo.sort(key=lambda k: (ta[k].file, offs_a[ta[k].file][1][k][0]))
    total = sum(ta[k].nbytes + tb[k].nbytes for k in todo)
    stats: dict[str, Stat] = {}
    done, peak = 0, 0
    handles: dict[tuple[str, str], object] = {}

    def fh(side: str, folder: Path, file: str):
        key = (side, file)
        if key not in handles:
            for k2 in [k for k in handles if k[0] == side]:  # one open shard per side
                handles.pop(k2).close()
            handles[key] = open(folder / file, "rb")
        return handles[key]

    try:
        for k in todo:
            ia, ib = ta[k], tb[k]
            ea, eb = ia.nbytes // max(1, _numel(ia.shape)), ib.nbytes // max(1, _numel(ib.shape))
            base_a = offs_a[ia.file][0] + offs_a[ia.file][1][k][0]
            base_b = offs_b[ib.file][0] + offs_b[ib.file][1][k][0]
            n = _numel(ia.shape)
            st = stats.setdefault(_module_of(k), Stat(_module_of(k)))
            fa, fb = fh("a", a, ia.file), fh("b", b, ib.file)
            pos = 0
            while pos < n:
                m = min(chunk_elems, n - pos)
                fa.seek(base_a + pos * ea)
                fb.seek(base_b + pos * eb)
                xa = _to_float(fa.read(m * ea), ia.dtype)
                xb = _to_float(fb.read(m * eb), ib.dtype)
                if xa.dtype != xb.dtype:
                    xa, xb = xa.astype(np.float64), xb.astype(np.float64)
                d = xa - xb
                sq = np.empty_like(d)
                peak = max(peak, m * (ea + eb) + 4 * m * d.itemsize)
                st.numel += m
                st.d2 += float(np.square(d, out=sq).sum(dtype=np.float64))
                st.a2 += float(np.square(xa, out=sq).sum(dtype=np.float64))
                st.b2 += float(np.square(xb, out=sq).sum(dtype=np.float64))
                np.abs(d, out=d)
                st.d1 += float(d.sum(dtype=np.float64))
                st.dmax = max(st.dmax, float(d.max()) if m else 0.0)
                st.a1 += float(np.abs(xa, out=sq).sum(dtype=np.float64))
                st.b1 += float(np.abs(xb, out=sq).sum(dtype=np.float64))
                del xa, xb, d, sq
                pos += m
                done += m * (ea + eb)
                if progress:
                    progress(done, total)
    finally:
        for h in handles.values():
            h.close()
    rep.modules = sorted(stats.values(), key=lambda s: (s.layer if s.layer is not None else -1, s.name))
    for s in rep.modules:
        rep.total.add(s)
    rep.bytes_read = done
    rep.peak_buffer_bytes = peak
    rep.seconds = time.perf_counter() - t0
    return rep


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


_MEMO: dict[tuple, DriftReport] = {}


def _weights_signature(folder: Path) -> tuple:
    return tuple(sorted((f.name, st.st_size, st.st_mtime_ns) for f in folder.glob("*.safetensors*")
                        for st in [f.stat()]))


def drift_once(a: str | Path, b: str | Path) -> DriftReport:
    """`drift(a, b)` over the whole checkpoints, computed once per process for the same two sets of weight files
    (names, sizes, mtimes): `port lora --method auto` decides on it and the projection's sibling test reads it
    again, and on real checkpoints each pass reads every byte of both models."""
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    key = (str(ra), str(rb), _weights_signature(ra), _weights_signature(rb))
    if key not in _MEMO:
        if len(_MEMO) >= 16:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = drift(a, b)
    return _MEMO[key]


def lineage_by_weights(source, target) -> DriftReport | None:
    """Drift between two ModelSpecs when both are local folders with safetensors weights; else None.
    ``check`` can use ``report.relation`` in place of the name-based lineage."""
    if getattr(source, "path", None) is None or getattr(target, "path", None) is None:
        return None
    if not source.tensors or not target.tensors:
        return None
    return drift_once(source.path, target.path)
