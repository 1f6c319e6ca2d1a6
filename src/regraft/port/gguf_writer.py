"""Write a LoRA adapter as a GGUF file llama.cpp loads with ``--lora`` (what ``convert_lora_to_gguf.py`` writes).

Metadata: ``general.architecture`` (qwen2 / qwen3 / qwen3moe), ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``. llama.cpp takes the rank from the tensor shapes and applies
``alpha / rank`` to every tensor, so each module's own scale must already be folded into lora_B (the port does it).
Tensors: ``blk.N.attn_q.weight.lora_a`` [r, in] / ``.lora_b`` [out, r] (numpy order; GGUF stores the reverse),
experts stacked per layer: ``blk.N.ffn_gate_exps.weight.lora_a`` [E, r, in] / ``.lora_b`` [E, out, r].
Qwen2/Qwen3 need no q/k permutation (NeoX RoPE), unlike Llama.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from regraft.errors import FileFormatError, InputError, need
from regraft.port.items import Item

GGUF_ARCH = {"qwen2": "QWEN2", "qwen3": "QWEN3", "qwen3_moe": "QWEN3MOE"}
_EXP = re.compile(r"^(?P<pre>.*\.experts)\.(?P<e>\d+)\.(?P<proj>\w+)$")


def gguf_names(items: list[Item], model_type: str, num_layers: int) -> dict[str, str]:
    gguf = need("gguf", "writing a GGUF LoRA", "gguf")
    if model_type not in GGUF_ARCH:
        raise InputError(f"regraft writes GGUF LoRA for {', '.join(GGUF_ARCH)}; the target is '{model_type}'.")
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, GGUF_ARCH[model_type]), num_layers)
    out = {}
    for it in items:
        m = _EXP.match(it.module)
        hf = f"{m.group('pre')}.{m.group('proj')}" if m else it.module
        name = tmap.get_name(hf)
        if name is None:
            raise InputError(f"No GGUF tensor for module '{it.module}' in llama.cpp's {model_type} name map.")
        out[it.module] = name
    return out


def write_gguf(out: Path, items: list[Item], model_type: str, num_layers: int, num_experts: int | None,
               alpha: float, name: str | None = None) -> dict:
    """Write items (plain LoRA, experts per expert, scales already folded for ``alpha``) to ``out`` atomically.
    Returns {gguf tensor name: numpy shape}."""
    gguf = need("gguf", "writing a GGUF LoRA", "gguf")
    import numpy as np

    names = gguf_names(items, model_type, num_layers)
    arrays: dict[str, "np.ndarray"] = {}
    stacks: dict[str, dict[int, Item]] = defaultdict(dict)
    for it in items:
        if it.kind != "lora":
            raise InputError(f"GGUF LoRA holds plain LoRA pairs only; '{it.module}' is {it.kind}.")
        m = _EXP.match(it.module)
        if m:
            stacks[names[it.module]][int(m.group("e"))] = it
            continue
        arrays[names[it.module] + ".weight.lora_a"] = it.a.float().numpy()
        arrays[names[it.module] + ".weight.lora_b"] = it.b.float().numpy()
    for base, by_e in stacks.items():
        if num_experts is None or sorted(by_e) != list(range(num_experts)):
            raise InputError(f"{base}: llama.cpp stacks LoRA over all {num_experts} experts; the adapter has "
                             f"{len(by_e)}.")
        ranks = {it.rank for it in by_e.values()}
        if len(ranks) != 1:
            raise InputError(f"{base}: expert ranks differ ({sorted(ranks)}); pad them first.")
        arrays[base + ".weight.lora_a"] = np.stack([by_e[e].a.float().numpy() for e in range(num_experts)])
        arrays[base + ".weight.lora_b"] = np.stack([by_e[e].b.float().numpy() for e in range(num_experts)])
    from regraft import outputs

    final = outputs.final_path(out)
    tmp = outputs.tmp_name(final)
    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, GGUF_ARCH[model_type])]
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        if name:
            w.add_name(name)
        for k in sorted(arrays):
            w.add_tensor(k, np.ascontiguousarray(arrays[k], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        outputs.commit(tmp, final)  # a single file: one os.replace
    finally:
        if tmp.exists():
            tmp.unlink()
    return {k: tuple(v.shape) for k, v in arrays.items()}


_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _check_gguf_layout(path: Path, size: int, n_tensors: int, n_kv: int) -> None:
    """Walk the metadata and tensor-info sections with every declared length checked against the file size
    first, so that the gguf package never loops over a damaged count (a crafted array length hung it)."""
    import struct

    def bad(why: str) -> FileFormatError:
        return FileFormatError(f"Cannot read GGUF '{path}': {why}. The file is damaged or not a GGUF LoRA; "
                               "re-create it.")

    with open(path, "rb") as f:
        data = f.read(min(size, 64 * 2**20))  # metadata and tensor infos live at the start
    pos = 24

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise bad(f"a field at byte {pos} declares {n} bytes, past the end of the header region")
        out = data[pos:pos + n]
        pos += n
        return out

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def value(vtype: int, depth: int = 0) -> None:
        if vtype in _GGUF_SCALAR:
            take(_GGUF_SCALAR[vtype])
        elif vtype == 8:
            take(u("Q"))
        elif vtype == 9 and depth < 4:
            etype, count = u("I"), u("Q")
            least = _GGUF_SCALAR.get(etype, 8 if etype == 8 else 12)
            if count * least > len(data) - pos:
                raise bad(f"an array declares {count} elements, more than the file can hold")
            for _ in range(count):
                value(etype, depth + 1)
        else:
            raise bad(f"unknown metadata value type {vtype}")

    for _ in range(n_kv):
        take(u("Q"))  # key
        value(u("I"))
    for _ in range(n_tensors):
        take(u("Q"))  # name
        n_dims = u("I")
        if n_dims > 8:
            raise bad(f"a tensor declares {n_dims} dimensions")
        take(8 * n_dims + 4 + 8)  # dims, type, offset


def read_gguf_lora(path: str | Path) -> tuple[dict, dict]:
    """(metadata {key: value}, tensors {name: numpy array in numpy order}) of a GGUF LoRA (for tests/verify)."""
    gguf = need("gguf", "reading a GGUF LoRA", "gguf")
    import numpy as np

    import struct

    try:  # declared counts checked against the file first: the gguf reader loops over them
        size = Path(path).stat().st_size
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise InputError(f"Cannot read GGUF '{path}': {e.strerror or e}.") from None
    if len(head) == 24 and head[:4] == b"GGUF":
        n_tensors, n_kv = struct.unpack("<QQ", head[8:24])
        if n_tensors > size // 8 or n_kv > size // 8:
            raise FileFormatError(f"Cannot read GGUF '{path}': it declares {n_tensors} tensors and {n_kv} metadata "
                                  f"entries, more than its {size} bytes can hold. The file is damaged; re-create it.")
        _check_gguf_layout(Path(path), size, n_tensors, n_kv)
    try:  # the gguf reader memory-maps the file: declared sizes past its end fail here, nothing is allocated
        r = gguf.GGUFReader(str(path))
        meta = {}
        for k, f in r.fields.items():
            if k.startswith("GGUF."):
                continue
            try:
                meta[k] = f.contents()
            except Exception:  # noqa: BLE001 - informational only
                meta[k] = None
        tensors = {}
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            tensors[t.name] = np.array(t.data).reshape(shape)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        raise FileFormatError(f"Cannot read GGUF '{path}': {type(e).__name__}: {' '.join(str(e).split())[:150]}. "
                              "The file is truncated or not a GGUF LoRA; re-create it.") from None
    except OSError as e:
        raise InputError(f"Cannot read GGUF '{path}': {e.strerror or e}.") from None
    return meta, tensors
