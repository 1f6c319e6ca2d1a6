"""Adapter health: what the adapter's numbers say, beyond its names and shapes.

- ``nonfinite``: NaN / Inf values per tensor (F32 / F16 / BF16), found from the exponent bits with byte-level
  operations -- pure Python, no numpy, so ``check`` can run it (adapters are small; bounded by ``max_bytes``);
- ``effective_ranks``: per module, the singular values of the update B @ A (via QR of the factors, never the full
  matrix) -> effective rank exp(entropy) and how much of ``r`` is used; B all zeros = never trained. Needs numpy
  (``inspect --health`` only);
- ``experts_untouched``: an MoE base whose routed experts the adapter never adapted -- target_modules alone on a
  transformers-5 MoE matches the shared expert (or nothing), not the fused routed experts (axolotl PR 3515:
  13.5 MB on Qwen3.5-35B-A3B; with lora_target_parameters 3.7 GB).
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_SCAN_BYTES = 4 * 2**20  # `check` scans adapters up to this size for NaN/Inf (bytes path, < 50 ms);
# `inspect ADAPTER --health` scans any size
_CHUNK = 64 * 2**20
# byte -> 1 when its exponent bits (in that byte) are all ones, else 0
_HI_BF16 = bytes(1 if b & 0x7F == 0x7F else 0 for b in range(256))  # also the high byte of F32
_LO_BF16 = bytes(1 if b & 0x80 else 0 for b in range(256))  # also byte 2 of F32
_HI_F16 = bytes(1 if b & 0x7C == 0x7C else 0 for b in range(256))
_LAYOUT = {"BF16": (2, 1, 0, _HI_BF16, _LO_BF16), "F32": (4, 3, 2, _HI_BF16, _LO_BF16), "F16": (2, 1, None, _HI_F16, None)}


def spans(path: Path) -> tuple[dict[str, tuple[str, list[int], int, int]], int]:
    """{name: (dtype, shape, begin, end)} from a safetensors header (already validated by read_header), and the
    offset where the data region starts."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        doc = json.loads(f.read(n))
    doc.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], *v["data_offsets"]) for k, v in doc.items()}, 8 + n


def _count_all_ones(buf: bytes, dtype: str) -> int:
    size, hi_i, lo_i, hi_t, lo_t = _LAYOUT[dtype]
    hi = buf[hi_i::size].translate(hi_t)
    if not hi.count(1):
        return 0
    if lo_i is None:
        return hi.count(1)
    lo = buf[lo_i::size].translate(lo_t)
    both = int.from_bytes(hi, "little") & int.from_bytes(lo, "little")
    return both.to_bytes(len(hi), "little").count(1)


def nonfinite(path: str | Path, max_bytes: int | None = None) -> dict[str, int] | None:
    """{tensor: number of NaN/Inf values} for the float tensors of one safetensors file (only the bad ones), or None
    when the data is larger than ``max_bytes`` (not scanned)."""
    path = Path(path)
    table, start = spans(path)
    total = sum(e - b for dt, _, b, e in table.values() if dt in _LAYOUT)
    if max_bytes is not None and total > max_bytes:
        return None
    bad: dict[str, int] = {}
    if total == 0:
        return bad
    np = None
    if total > 4 * 2**20:  # numpy, when installed, is ~20x faster on large data (but its import costs ~60 ms)
        try:
            import numpy as np
        except ImportError:
            np = None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for name, (dt, _, b, e) in table.items():
            if dt not in _LAYOUT or e <= b:
                continue
            if np is not None:
                utype, mask = _NP_MASKS[dt]
                n = 0
                for o in range(b, e, _CHUNK):  # copies of at most _CHUNK bytes: the mmap stays closable
                    x = np.frombuffer(mm[start + o:start + min(o + _CHUNK, e)], dtype=utype)
                    n += int(np.count_nonzero((x & mask) == mask))
            else:
                step = _CHUNK - _CHUNK % _LAYOUT[dt][0]
                n = sum(_count_all_ones(mm[start + o:start + min(o + step, e)], dt) for o in range(b, e, step))
            if n:
                bad[name] = n
    return bad


_NP_MASKS = {"BF16": ("<u2", 0x7F80), "F16": ("<u2", 0x7C00), "F32": ("<u4", 0x7F800000)}


@dataclass(frozen=True)
class ModuleRank:
    module: str
    r: int
    effective_rank: float  # exp(entropy of the normalised singular values of B @ A)
    used: int  # singular values above 1% of the largest
    zero: bool  # B (or A) all zeros: the module was never trained or was initialised and saved

    @property
    def utilisation(self) -> float:
        return self.effective_rank / self.r if self.r else 0.0


def _array(mm, start: int, dt: str, shape: list[int], b: int, e: int):
    import numpy as np

    raw = np.frombuffer(mm[start + b:start + e], dtype={"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[dt])
    if dt == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float64).reshape(shape)


def effective_ranks(adapter) -> list[ModuleRank]:
    """Effective rank of every 2-D LoRA module of an AdapterSpec (safetensors only; numpy required)."""
    import numpy as np

    path = Path(adapter.path) / adapter.weights_file
    if adapter.weights_file != "adapter_model.safetensors":
        return []
    table, start = spans(path)
    out = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for m in adapter.lora_modules:
            if m.kind != "lora" or m.a is None or m.b is None or len(m.a.shape) != 2 or len(m.b.shape) != 2:
                continue
            ea, eb = table.get(m.a.name), table.get(m.b.name)
            if not ea or not eb or ea[0] not in _LAYOUT or eb[0] not in _LAYOUT:
                continue
            a, b = _array(mm, start, *ea), _array(mm, start, *eb)
            r = a.shape[0]
            if not np.any(a) or not np.any(b):
                out.append(ModuleRank(m.module, r, 0.0, 0, True))
                continue
            if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
                continue  # reported by nonfinite()
            ra = np.linalg.qr(a.T, mode="r")  # B @ A = Qb Rb (Qa Ra)^T -> singular values of Rb Ra^T
            rb = np.linalg.qr(b, mode="r")
            s = np.linalg.svd(rb @ ra.T, compute_uv=False)
            p = s / s.sum()
            p = p[p > 0]
            out.append(ModuleRank(m.module, r, float(np.exp(-(p * np.log(p)).sum())), int((s > 0.01 * s[0]).sum()), False))
    return out


def experts_untouched(adapter, base) -> dict | None:
    """When ``base`` (a ModelSpec) has routed experts the adapter never adapted although it targets MLP
    projections: {"experts": E, "shared": [...], "targets": [...], "adapter_bytes": n, "expert_lora_bytes": m}."""
    arch = base.arch if base is not None else None
    if adapter is None or arch is None or not arch.is_moe or not arch.num_experts:
        return None
    if any(m.kind == "fused_experts" or m.expert is not None for m in adapter.modules):
        return None
    tm = adapter.target_modules
    names = [tm] if isinstance(tm, str) else list(tm or [])
    mlp = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "experts")
    targets = [t for t in names if t == "all-linear" or any(t.endswith(x) for x in mlp)]
    if not targets and not adapter.target_parameters:
        return None
    shared = sorted({m.module.split("layers.", 1)[-1].split(".", 1)[-1] for m in adapter.lora_modules
                     if "shared_expert" in m.module})
    r = adapter.r
    per_layer = 0
    layer = next((i for i in range(arch.num_layers or 0) if arch.is_sparse(i)), None)
    if layer is not None:
        for mod in arch.layer_modules(layer, "disk"):
            if mod.expert is None and "{e}" not in mod.name or mod.shape is None or mod.kind != "linear":
                continue
            per_layer += arch.num_experts * r * (mod.shape[0] + mod.shape[1])
    layers = adapter.layers or range(arch.num_layers or 0)  # the layers the adapter covers
    sparse = sum(arch.is_sparse(i) for i in layers if i < (arch.num_layers or 0))
    bytes_each = 2 if {t.dtype for t in adapter.tensors.values()} <= {"BF16", "F16"} else 4
    return {"experts": arch.num_experts, "shared": shared, "targets": targets,
            "adapter_bytes": sum(t.nbytes for t in adapter.tensors.values()),
            "expert_lora_bytes": per_layer * sparse * bytes_each}


QUICK_BYTES = 16 * 2**20  # `inspect` without --health scans NaN/Inf only below this size (well under 50 ms)


def health_card(adapter, full: bool = False) -> dict:
    """The 'health' section of ``inspect ADAPTER`` (``full``: --health, also effective ranks; numpy needed)."""
    from regraft.checks.lineage import resolve_declared

    out: dict = {}
    path = Path(adapter.path) / adapter.weights_file
    if adapter.weights_file == "adapter_model.safetensors":
        bad = nonfinite(path, None if full else QUICK_BYTES)
        if bad is None:
            out["nan_inf"] = f"not scanned ({sum(t.nbytes for t in adapter.tensors.values()) / 2**20:.0f} MiB; --health scans it)"
        else:
            out["nan_inf"] = (f"{sum(bad.values())} values in {len(bad)} tensors, e.g. {next(iter(bad))}" if bad
                              else "none")
    if full:
        from regraft.errors import need

        need("numpy", "effective ranks (inspect --health)", "numpy")
        ranks = effective_ranks(adapter)
        if ranks:
            zero = [m.module for m in ranks if m.zero]
            live = [m for m in ranks if not m.zero]
            if live:
                util = sorted(m.utilisation for m in live)
                out["effective_rank"] = (f"{len(live)} modules: utilisation of r median {util[len(util) // 2]:.2f}, "
                                         f"min {util[0]:.2f} ({min(live, key=lambda m: m.utilisation).module}), "
                                         f"max {util[-1]:.2f}")
            out["untrained_modules"] = (f"{len(zero)} with B or A all zeros, e.g. {zero[0]}" if zero else "none")
    base = resolve_declared(adapter.base_model)
    eu = experts_untouched(adapter, base)
    if eu:
        out["routed_experts"] = (f"never adapted: the base {base.name} has {eu['experts']} routed experts and the "
                                 f"adapter has no expert tensors (target_modules {', '.join(eu['targets'])} reach "
                                 + (", ".join(eu["shared"]) if eu["shared"] else "no expert") + "); "
                                 f"{eu['adapter_bytes'] / 2**20:.1f} MiB vs ~{eu['expert_lora_bytes'] / 2**30:.1f} GiB "
                                 "with the experts (target_parameters mlp.experts.gate_up_proj / down_proj)")
    return out
