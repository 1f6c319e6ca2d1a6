"""Exact relayout of MoE expert LoRA between the two layouts PEFT knows.

- **v4 / per-expert** (transformers 4 checkpoints, what llama.cpp's converter accepts):
  ``model.layers.L.mlp.experts.E.{gate,up,down}_proj.lora_A.weight`` [r, in] and ``lora_B.weight`` [out, r].
- **v5 / fused** (transformers 5, PEFT >= 0.19 ``target_parameters``): one nested ParamWrapper per parameter,
  ``mlp.experts.base_layer.lora_*`` (gate_up_proj) and ``mlp.experts.lora_*`` (down_proj), with
  A [E*r, in] reshaped (E, r, in) (expert-major) and B [out, E*r] reshaped (out, r, E) (rank-major, column k*E+e),
  as in ``peft.tuners.lora.layer.ParamWrapper.get_delta_weight``.

gate_up_proj is [gate; up] along the output axis (checked against transformers' weight conversion), so a
per-expert pair (gate, up) of rank r becomes one rank-2r LoRA: A = [A_gate; A_up], B = blockdiag(B_gate, B_up),
which is exactly what PEFT's own v4 -> v5 conversion writes (rank_pattern / alpha_pattern ``.*\\.gate_up_proj``
= 2r / 2*alpha). The reverse recovers the rank-r pair bit for bit when B is block-diagonal (it always is after a
conversion); a fused adapter trained as such splits into gate and up sharing A (rank 2r each), still exact.
"""

from __future__ import annotations

import re
from collections import defaultdict

from regraft.port.items import Item

_EXP = re.compile(r"^(?P<pre>.*\.experts)\.(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj|w1|w2|w3)$")
_V4_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def experts_of(items: list[Item]) -> tuple[list[Item], list[Item], list[Item]]:
    """(per-expert items, fused items, everything else)."""
    per, fused, rest = [], [], []
    for it in items:
        if it.kind == "fused_experts":
            fused.append(it)
        elif it.kind == "lora" and it.expert is not None and _EXP.match(it.module):
            per.append(it)
        else:
            rest.append(it)
    return per, fused, rest


def to_v5(items: list[Item], num_experts: int) -> list[Item]:
    """Per-expert items -> fused items (exact). Needs every expert of a layer, equal ranks per projection and one
    scale per fused parameter (fold first otherwise; :func:`v5_blockers` says why not)."""
    import torch

    per, fused, rest = experts_of(items)
    groups: dict[str, dict[str, dict[int, Item]]] = defaultdict(lambda: defaultdict(dict))
    for it in per:
        m = _EXP.match(it.module)
        groups[m.group("pre")][_V4_NAMES.get(m.group("proj"), m.group("proj"))][int(m.group("e"))] = it
    out = list(rest) + list(fused)
    for pre, projs in groups.items():
        layer = next(iter(next(iter(projs.values())).values())).layer
        why = _group_blockers(pre, projs, num_experts)
        if why:
            raise ValueError(why)
        if "gate_proj" in projs:
            g, u = projs["gate_proj"], projs["up_proj"]
            a = torch.stack([torch.cat([g[e].a, u[e].a.to(g[e].a.dtype)]) for e in range(num_experts)])  # E, 2r, H
            bs = [torch.block_diag(g[e].b, u[e].b.to(g[e].b.dtype)) for e in range(num_experts)]  # 2I, 2r each
            b = torch.stack(bs, dim=-1)  # 2I, 2r, E
            out.append(Item(pre, "fused_experts", g[0].scale, a.reshape(-1, a.shape[-1]).contiguous(),
                            b.reshape(b.shape[0], -1).contiguous(), param="gate_up_proj", nesting=1, layer=layer))
        if "down_proj" in projs:
            d = projs["down_proj"]
            a = torch.stack([d[e].a for e in range(num_experts)])  # E, r, I
            b = torch.stack([d[e].b for e in range(num_experts)], dim=-1)  # H, r, E
            out.append(Item(pre, "fused_experts", d[0].scale, a.reshape(-1, a.shape[-1]).contiguous(),
                            b.reshape(b.shape[0], -1).contiguous(), param="down_proj", nesting=0, layer=layer))
    return out


def _group_blockers(pre: str, projs: dict, num_experts: int) -> str | None:
    for proj, by_e in projs.items():
        if sorted(by_e) != list(range(num_experts)):
            return f"{pre}: {proj} has LoRA on experts {sorted(by_e)[:6]}..., fusing needs all {num_experts}"
        ranks = {it.rank for it in by_e.values()}
        scales = {it.scale for it in by_e.values()}
        if len(ranks) > 1:
            return f"{pre}: {proj} ranks differ across experts {sorted(ranks)} (pad first)"
        if len(scales) > 1:
            return f"{pre}: {proj} scales differ across experts (fold first)"
        if any(it.bias is not None or it.magnitude is not None for it in by_e.values()):
            return f"{pre}: {proj} has lora bias or DoRA, which fused experts cannot hold"
    if ("gate_proj" in projs) != ("up_proj" in projs):
        return f"{pre}: gate_proj and up_proj are fused into gate_up_proj; the adapter targets only one of them"
    if "gate_proj" in projs:
        g, u = projs["gate_proj"][0], projs["up_proj"][0]
        if g.scale != u.scale:
            return f"{pre}: gate_proj and up_proj have different scales (fold first)"
    return None


def v5_blockers(items: list[Item], num_experts: int) -> list[str]:
    per, _, _ = experts_of(items)
    groups: dict[str, dict[str, dict[int, Item]]] = defaultdict(lambda: defaultdict(dict))
    for it in per:
        m = _EXP.match(it.module)
        groups[m.group("pre")][_V4_NAMES.get(m.group("proj"), m.group("proj"))][int(m.group("e"))] = it
    return [w for pre, projs in groups.items() if (w := _group_blockers(pre, projs, num_experts))]


def split_fused(it: Item, num_experts: int, intermediate: int | None = None) -> list[Item]:
    """One fused item -> per-expert items (exact)."""
    E = num_experts
    total = it.a.shape[0]
    r = total // E
    a = it.a.reshape(E, r, it.a.shape[-1])  # E, r, in
    b = it.b.reshape(it.b.shape[0], r, E)  # out, r, E
    out = []
    if it.param == "down_proj":
        for e in range(E):
            out.append(Item(f"{it.module}.{e}.down_proj", "lora", it.scale, a[e].contiguous(),
                            b[:, :, e].contiguous(), layer=it.layer, expert=e))
        return out
    inter = intermediate or b.shape[0] // 2
    gate_cols, up_cols = _block_columns(b, inter)
    for e in range(E):
        be = b[:, :, e]
        if gate_cols is not None:
            g = (a[e][gate_cols], be[:inter][:, gate_cols])
            u = (a[e][up_cols], be[inter:][:, up_cols])
        else:  # a fused adapter trained as such: gate and up share A
            g = (a[e], be[:inter])
            u = (a[e], be[inter:])
        out.append(Item(f"{it.module}.{e}.gate_proj", "lora", it.scale, g[0].contiguous(), g[1].contiguous(),
                        layer=it.layer, expert=e))
        out.append(Item(f"{it.module}.{e}.up_proj", "lora", it.scale, u[0].contiguous(), u[1].contiguous(),
                        layer=it.layer, expert=e))
    return out


def _block_columns(b, inter: int):
    """Rank columns that only touch gate rows / only touch up rows, when B is block-diagonal for every expert with
    the same split (what a conversion from per-expert writes); None otherwise."""
    import torch

    top = (b[:inter] != 0).any(dim=0).any(dim=-1)  # r: column touches gate rows in some expert
    bottom = (b[inter:] != 0).any(dim=0).any(dim=-1)
    if bool((top & bottom).any()):
        return None, None
    r = b.shape[1]
    gate = torch.nonzero(~bottom).flatten()  # columns never touching up rows (incl. all-zero ones)
    gate = gate[: r // 2] if len(gate) > r // 2 else gate
    up = torch.tensor([c for c in range(r) if c not in set(gate.tolist())], dtype=torch.long)
    if len(gate) != len(up) or bool(top[up].any()):
        return None, None
    return gate, up


def to_v4(items: list[Item], num_experts: int, intermediate: int | None = None) -> list[Item]:
    per, fused, rest = experts_of(items)
    out = list(rest) + list(per)
    for it in fused:
        out.extend(split_fused(it, num_experts, intermediate))
    return out


def old_orientation(am, target_shape, num_experts: int, peft_version: str | None) -> bool:
    """True when a fused-experts module is in PEFT <= 0.18's orientation (in/out swapped for 3-D parameters that
    are not ``is_transposed``; peft#2521): A [E*r, out] and B [in, E*r] for a parameter (E, out, in).
    When out == in the shapes cannot tell; ``peft_version`` in adapter_config.json decides."""
    if target_shape is None or len(target_shape) != 3 or am.a is None or am.b is None:
        return False
    E, out_f, in_f = target_shape
    total = am.a.shape[0]
    if total % E or am.b.shape[1] != total:
        return False
    new = am.a.shape[1] == in_f and am.b.shape[0] == out_f
    old = am.a.shape[1] == out_f and am.b.shape[0] == in_f
    if old and not new:
        return True
    if old and new and peft_version:
        try:
            major, minor = (int(x) for x in peft_version.split(".")[:2])
            return (major, minor) < (0, 19)
        except ValueError:
            return False
    return False


def reorient_fused(it: Item, num_experts: int) -> Item:
    """PEFT <= 0.18 fused item -> PEFT >= 0.19 orientation (exact: a permutation of the same numbers).

    Old: delta_e = A_e^T B_e^T with A (E, r, out), B (in, r, E). New: delta_e = B'_e A'_e with
    B'_e = A_e^T, A'_e = B_e^T, stored A' (E, r, in) expert-major and B' (out, r, E) rank-major."""
    E = num_experts
    r = it.a.shape[0] // E
    a = it.a.reshape(E, r, -1)  # E, r, out
    b = it.b.reshape(it.b.shape[0], r, E)  # in, r, E
    new_a = b.permute(2, 1, 0).reshape(E * r, -1).contiguous()  # E, r, in
    new_b = a.permute(2, 1, 0).reshape(a.shape[-1], r * E).contiguous()  # out, r, E
    return it.copy(a=new_a, b=new_b)


def to_old_orientation(it: Item, num_experts: int) -> Item:
    """The inverse of :func:`reorient_fused` (for tests and for writing adapters older PEFT reads)."""
    E = num_experts
    r = it.a.shape[0] // E
    a = it.a.reshape(E, r, -1)  # E, r, in
    b = it.b.reshape(it.b.shape[0], r, E)  # out, r, E
    old_a = b.permute(2, 1, 0).reshape(E * r, -1).contiguous()  # E, r, out
    old_b = a.permute(2, 1, 0).reshape(a.shape[-1], r * E).contiguous()  # in, r, E
    return it.copy(a=old_a, b=old_b)


# -- producer layouts (catalog/layouts.json), whole folders ------------------------------------------------------
def relayout_folder(adapter: str, out: str, from_layout: str, to_layout: str, target=None, force: bool = False,
                    dry_run: bool = False) -> dict:
    """Read an adapter folder of any producer layout, convert it exactly (:func:`regraft.port.layouts.convert`)
    and write it atomically. ``from_layout`` "auto" takes what :mod:`regraft.inspection.producer` decides and
    refuses an undecided one. Returns a report dict."""
    from pathlib import Path

    from regraft.errors import InputError, need
    from regraft.inspection.producer import inspect_producer
    from regraft.port.layouts import convert

    src = Path(adapter).expanduser()
    arch = getattr(target, "arch", None)
    vals = arch.values if arch is not None else {}
    widths = (vals.get("hidden_size"), vals.get("moe_intermediate_size"))
    rep = inspect_producer(src, widths if all(widths) else None)
    if from_layout == "auto":
        if rep.layout == "unknown":
            raise InputError(f"Cannot tell the layout of '{src}': {'; '.join(rep.missing) or 'no layout fits'}. "
                             f"Name it: --layout FROM:{to_layout} (candidates: {', '.join(rep.candidates) or '-'}).")
        from_layout = rep.layout
    if rep.weights_file is None:
        raise InputError(f"Cannot relayout '{src}': no adapter_model.safetensors or adapters.safetensors.")
    base = {"num_experts": vals.get("num_experts"), "hidden_size": vals.get("hidden_size"),
            "moe_intermediate_size": vals.get("moe_intermediate_size"),
            "num_hidden_layers": vals.get("num_hidden_layers")}
    report = {"adapter": str(src), "from_layout": from_layout, "to_layout": to_layout, "producer": rep.producer,
              "out": out, "exact": True}
    if dry_run:
        return {**report, "dry_run": True}
    need("torch", "regraft port lora --layout", "torch")
    need("safetensors", "regraft port lora --layout", "torch")
    from safetensors.torch import load_file

    from regraft.inspection.files import inside, read_json
    from regraft.port.write import _tmp_name, check_output, replace_into, write_peft

    tensors = load_file(str(inside(src, rep.weights_file)))
    config = read_json(inside(src, "adapter_config.json"), "adapter_config.json") \
        if (src / "adapter_config.json").is_file() else {}
    new_t, new_cfg, notes = convert(tensors, config, from_layout, to_layout, base)
    dest = check_output(out, [src], force)
    if to_layout == "mlx-lm":
        import json
        import shutil

        from safetensors.torch import save_file

        tmp = _tmp_name(dest)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            save_file({k: v.contiguous() for k, v in new_t.items()}, str(tmp / "adapters.safetensors"))
            (tmp / "adapter_config.json").write_text(json.dumps(new_cfg, indent=2, sort_keys=True) + "\n")
            replace_into(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    else:
        write_peft(dest, new_cfg, new_t)
    return {**report, "notes": notes, "tensors_written": len(new_t)}
