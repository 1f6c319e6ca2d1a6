"""Exact conversions between producer layouts (catalog/layouts.json): pure functions on tensors and configs.

    convert(tensors, config, from_layout, to_layout, base=None) -> (tensors, config, notes)

``tensors`` maps the file's own tensor names to torch tensors; ``config`` is the adapter_config.json dict;
``base`` holds the model facts some conversions need (``num_experts``, ``hidden_size``, ``moe_intermediate_size``,
``num_hidden_layers``). Nothing here reads or writes files. Every conversion is a permutation, transpose or
reshape of the same numbers (bit-exact), so the converted adapter computes the same update:

- mlx-lm -> peft: lora_a [in, r] -> lora_A [r, in] = a^T; lora_b [r, out] -> lora_B [out, r] = b^T;
  alpha = scale * r (MLX adds scale * x a b, PEFT (alpha/r) x A^T B^T). peft -> mlx-lm is the inverse.
- unsloth-3d-blockwise -> peft-3d-linear: lora_B column e*r+k (block) -> k*E+e (interleaved).
- peft-3d-positional / nemo-automodel-3d-swapped -> peft-3d-linear: per expert A' = B_e^T, B' = A_e^T.
- megatron-3d-per-projection -> peft-3d-linear: A [E, r, in] -> [E*r, in]; B [E, out, r] -> [out, r*E].
- tinker-raw -> peft-per-expert: the broadcast expert axis expanded, w1/w3/w2 -> gate/up/down_proj.
"""

from __future__ import annotations

import re
from typing import Callable

from regraft.errors import InputError

PREFIX = "base_model.model."
Result = tuple[dict, dict, list[str]]


def convert(tensors: dict, config: dict, from_layout: str, to_layout: str, base: dict | None = None) -> Result:
    """Convert an adapter's tensors and config from one layout to another (exact), or raise InputError."""
    if from_layout == to_layout:
        raise InputError(f"The adapter is already in layout '{to_layout}': nothing to convert.")
    fn = CONVERSIONS.get((from_layout, to_layout))
    if fn is None:
        known = ", ".join(f"{a}:{b}" for a, b in CONVERSIONS)
        raise InputError(f"No exact conversion from layout '{from_layout}' to '{to_layout}'. Known: {known}.")
    return fn(dict(tensors), dict(config), dict(base or {}))


def _need(base: dict, key: str, why: str) -> int:
    v = base.get(key)
    if not v:
        raise InputError(f"Converting {why} needs the base model's {key}: give the base model (TARGET).")
    return int(v)


# -- MLX-LM <-> PEFT ----------------------------------------------------------------------------------------------
def mlx_to_peft(tensors: dict, config: dict, base: dict) -> Result:
    lp = config.get("lora_parameters") or {}
    if config.get("fine_tune_type", "lora") != "lora":
        raise InputError(f"MLX-LM fine_tune_type {config.get('fine_tune_type')!r}: only plain LoRA converts "
                         "exactly (DoRA magnitudes and full fine-tunes do not).")
    out, ranks, modules = {}, set(), set()
    for name, t in tensors.items():
        m = re.match(r"^(?P<mod>.+)\.lora_(?P<s>[ab])$", name)
        if not m:
            raise InputError(f"MLX-LM tensor '{name}' is not a lora_a/lora_b pair (DoRA 'm' and other keys do "
                             "not convert exactly).")
        mod = m.group("mod")
        if ".switch_mlp." in mod or t.dim() != 2:
            raise InputError(f"MLX-LM tensor '{name}' {list(t.shape)} is a SwitchLinear (MoE experts) LoRA: regraft "
                             "does not convert MLX expert LoRA.")
        slot = "A" if m.group("s") == "a" else "B"
        out[f"{PREFIX}{mod}.lora_{slot}.weight"] = t.T.contiguous()
        ranks.add(t.shape[1] if slot == "A" else t.shape[0])
        modules.add(mod.rsplit(".", 1)[-1])
    if len(ranks) != 1:
        raise InputError(f"MLX-LM adapter has ranks {sorted(ranks)}; one rank per adapter is expected.")
    r = ranks.pop()
    if lp.get("rank") not in (None, r):
        raise InputError(f"MLX-LM lora_parameters.rank {lp.get('rank')} differs from the tensors' rank {r}.")
    scale = float(lp.get("scale", 20.0))  # mlx-lm's default scale
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": scale * r,
           "lora_dropout": float(lp.get("dropout", 0.0)), "target_modules": sorted(modules), "bias": "none",
           "use_rslora": False, "use_dora": False, "base_model_name_or_path": config.get("model")}
    notes = [f"MLX-LM -> PEFT: {len(out)} tensors transposed; lora_alpha = scale {scale:g} x r {r} = {scale * r:g}"]
    if "scale" not in lp:
        notes.append("lora_parameters.scale missing: mlx-lm's default 20.0 used")
    return out, cfg, notes


def peft_to_mlx(tensors: dict, config: dict, base: dict) -> Result:
    from regraft.inspection.adapter import AdapterSpec

    spec = AdapterSpec(".", config, {}, [], "")
    if config.get("use_dora") or config.get("lora_bias"):
        raise InputError("PEFT -> MLX-LM: DoRA and lora_bias do not convert exactly; merge the adapter instead.")
    out, layers, keys, scales, ranks = {}, set(), set(), set(), set()
    for name, t in tensors.items():
        m = re.match(r"^(?:base_model\.model\.)?(?P<mod>.+)\.lora_(?P<s>[AB])\.weight$", name)
        if not m or ".experts." in name:
            raise InputError(f"PEFT -> MLX-LM: tensor '{name}' is not a dense lora_A/lora_B pair (embedding, "
                             "modules_to_save and expert LoRA do not convert).")
        mod = m.group("mod")
        out[f"{mod}.lora_{m.group('s').lower()}"] = t.T.contiguous()
        lm = re.search(r"layers\.(\d+)\.(.+)$", mod)
        if lm:
            layers.add(int(lm.group(1)))
            keys.add(lm.group(2))
        scales.add(round(spec.scale(mod), 9))
        ranks.add(t.shape[0] if m.group("s") == "A" else t.shape[1])
    if len(scales) != 1 or len(ranks) != 1:
        raise InputError(f"PEFT -> MLX-LM: MLX-LM has one rank and one scale per adapter; this one has ranks "
                         f"{sorted(ranks)} and scales {sorted(scales)} (fold the scales and pad the ranks first).")
    n_model = base.get("num_hidden_layers")
    notes = []
    if n_model:
        num_layers = int(n_model) - min(layers)  # MLX-LM adapts the last num_layers layers
    else:
        num_layers = max(layers) + 1 - min(layers) if layers else 0
        notes.append("num_hidden_layers of the base unknown: num_layers counts the adapted layers; MLX-LM adapts "
                     "the LAST num_layers layers, so check it against the model")
    cfg = {"fine_tune_type": "lora", "num_layers": num_layers, "model": config.get("base_model_name_or_path"),
           "lora_parameters": {"rank": ranks.pop(), "scale": scales.pop(), "dropout": 0.0, "keys": sorted(keys)}}
    notes.insert(0, f"PEFT -> MLX-LM: {len(out)} tensors transposed; scale = {cfg['lora_parameters']['scale']:g}")
    return out, cfg, notes


# -- fused 3-D experts --------------------------------------------------------------------------------------------
_FUSED = re.compile(r"^(?P<pre>.*\.experts)(?P<nest>(?:\.base_layer)*)\.lora_(?P<s>[AB])\.weight$")


def _fused_pairs(tensors: dict) -> dict:
    """(pre, nesting) -> {"A": name, "B": name} for PEFT ParamWrapper tensors."""
    out: dict = {}
    for name, t in tensors.items():
        m = _FUSED.match(name)
        if m and t.dim() == 2:
            out.setdefault((m.group("pre"), m.group("nest").count(".base_layer")), {})[m.group("s")] = name
    return out


def blockwise_to_interleaved(tensors: dict, config: dict, base: dict) -> Result:
    E = _need(base, "num_experts", "block-wise expert LoRA")
    n = 0
    for (_, _), p in _fused_pairs(tensors).items():
        b = tensors[p["B"]]
        r = b.shape[1] // E
        if b.shape[1] != r * E:
            raise InputError(f"'{p['B']}' has {b.shape[1]} columns, not a multiple of {E} experts.")
        tensors[p["B"]] = b.reshape(b.shape[0], E, r).permute(0, 2, 1).reshape(b.shape[0], E * r).contiguous()
        n += 1
    if not n:
        raise InputError("No fused expert LoRA (experts[.base_layer].lora_B.weight) in the adapter to re-order.")
    return tensors, config, [f"{n} fused lora_B re-ordered from block-wise (expert slowest) to PEFT's interleaved "
                             "order (expert fastest): a permutation of columns, exact"]


def positional_to_linear(tensors: dict, config: dict, base: dict) -> Result:
    E = _need(base, "num_experts", "fused expert LoRA")
    n = 0
    for (_, _), p in _fused_pairs(tensors).items():
        a, b = tensors[p["A"]], tensors[p["B"]]
        r = a.shape[0] // E
        a3 = a.reshape(E, r, -1)  # E, r, out   (positional: delta_e = A_e^T B_e^T)
        b3 = b.reshape(b.shape[0], r, E)  # in, r, E
        tensors[p["A"]] = b3.permute(2, 1, 0).reshape(E * r, -1).contiguous()  # E, r, in
        tensors[p["B"]] = a3.permute(2, 1, 0).reshape(a3.shape[-1], r * E).contiguous()  # out, r, E
        n += 1
    if not n:
        raise InputError("No fused expert LoRA (experts[.base_layer].lora_A/B.weight) in the adapter to re-orient.")
    config["peft_version"] = "0.19.1"
    return tensors, config, [f"{n} fused expert pairs re-oriented from PEFT 0.18 (positional) to PEFT >= 0.19 "
                             "(nn.Linear, what vLLM's fused MoE LoRA reads): per expert A' = B^T, B' = A^T, exact",
                             "peft_version set to 0.19.1 (the orientation now stored)"]


_PROJ = re.compile(r"^(?P<pre>.*\.experts)\.(?P<proj>gate_up_proj|down_proj)\.lora_(?P<s>[AB])\.weight$")


def per_projection_to_linear(tensors: dict, config: dict, base: dict) -> Result:
    r = int(config.get("r") or 0)
    groups: dict = {}
    out = {}
    for name, t in tensors.items():
        m = _PROJ.match(name)
        if m and t.dim() == 3:
            groups.setdefault(m.group("pre"), {}).setdefault(m.group("proj"), {})[m.group("s")] = t
        else:
            out[name] = t
    if not groups:
        raise InputError("No per-projection 3-D expert LoRA (experts.gate_up_proj/down_proj.lora_A.weight) found.")
    params = set()
    for pre, projs in groups.items():
        both = len(projs) == 2
        for proj, ab in projs.items():
            a, b = ab["A"], ab["B"]
            E = a.shape[0]
            if a.shape[1] != r and a.shape[2] == r:  # [E, in, r] variant
                a = a.transpose(1, 2)
            if b.shape[2] != r and b.shape[1] == r:  # [E, r, out] variant
                b = b.transpose(1, 2)
            rr = a.shape[1]
            nest = ".base_layer" if both and proj == "gate_up_proj" else ""
            out[f"{pre}{nest}.lora_A.weight"] = a.reshape(E * rr, -1).contiguous()
            out[f"{pre}{nest}.lora_B.weight"] = b.permute(1, 2, 0).reshape(b.shape[1], rr * E).contiguous()
            params.add(proj)
    cfg = dict(config)
    leaf = next(iter(groups)).split("layers.", 1)[-1].split(".", 1)[-1]  # e.g. mlp.experts
    cfg["target_parameters"] = sorted(f"{leaf}.{p}" for p in params)
    cfg.setdefault("peft_type", "LORA")
    return out, cfg, [f"{len(groups)} layers of per-projection 3-D expert LoRA flattened to PEFT's fused form "
                      f"({', '.join(sorted(params))}; B interleaved, expert fastest), exact"]


_TINKER = re.compile(r"^(?P<pre>.*\.experts)\.(?P<w>w[123])\.lora_(?P<s>[AB])\.weight$")
_TINKER_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def tinker_to_per_expert(tensors: dict, config: dict, base: dict) -> Result:
    out, n, skipped = {}, 0, 0
    for name, t in tensors.items():
        m = _TINKER.match(name)
        if not m:
            out[name] = t
            continue
        if t.numel() == 0:  # Nemotron's empty w3 placeholder
            skipped += 1
            continue
        if t.dim() != 3:
            raise InputError(f"Tinker expert tensor '{name}' {list(t.shape)}: expected 3-D [E or 1, ., .].")
        E = _need(base, "num_experts", "Tinker expert LoRA") if t.shape[0] == 1 else t.shape[0]
        for e in range(E):
            out[f"{m.group('pre')}.{e}.{_TINKER_NAMES[m.group('w')]}.lora_{m.group('s')}.weight"] = \
                t[0 if t.shape[0] == 1 else e].clone()  # own storage: safetensors refuses shared views
        n += 1
    if not n:
        raise InputError("No Tinker expert tensors (experts.w1/w2/w3.lora_A.weight) in the adapter.")
    cfg = dict(config)
    tm = set(cfg.get("target_modules") or [])
    tm |= {"gate_proj", "up_proj", "down_proj"}
    cfg["target_modules"] = sorted(tm)
    cfg.pop("target_parameters", None)
    notes = [f"{n} Tinker expert tensors expanded per expert (w1 -> gate_proj, w3 -> up_proj, w2 -> down_proj), exact"]
    if skipped:
        notes.append(f"{skipped} empty placeholder tensors skipped (models without gate_proj: check the w1 mapping)")
    return out, cfg, notes


# -- multimodal wrapper namespaces (the catalog's mechanism) ------------------------------------------------------
def _namespace_rename(direction: str) -> Callable[[str], str]:
    """The catalog helper's name rename (catalog/namespaces.json); not built here a second time."""
    try:
        from regraft.checks import namespaces  # noqa: F401  (catalog helper, issue 14)
    except ImportError:
        raise InputError("CausalLM <-> ConditionalGeneration renames need regraft's namespaces catalog "
                         "(catalog/namespaces.json), which this build does not have yet.") from None
    fn = getattr(namespaces, "rename_key", None)
    if fn is None:
        raise InputError("regraft.checks.namespaces has no rename_key(name, direction): cannot rename.")
    return lambda name: fn(name, direction)


def causal_to_conditional(tensors: dict, config: dict, base: dict) -> Result:
    rename = _namespace_rename("causal->conditional")
    return {rename(k): v for k, v in tensors.items()}, config, ["names moved into the ConditionalGeneration "
                                                                 "wrapper namespace (catalog namespaces)"]


def conditional_to_causal(tensors: dict, config: dict, base: dict) -> Result:
    rename = _namespace_rename("conditional->causal")
    return {rename(k): v for k, v in tensors.items()}, config, ["names moved out of the ConditionalGeneration "
                                                                 "wrapper namespace (catalog namespaces)"]


CONVERSIONS: dict[tuple[str, str], Callable[[dict, dict, dict], Result]] = {
    ("mlx-lm", "peft"): mlx_to_peft,
    ("mlx-lm", "peft-standard"): mlx_to_peft,
    ("peft", "mlx-lm"): peft_to_mlx,
    ("peft-standard", "mlx-lm"): peft_to_mlx,
    ("unsloth-3d-blockwise", "peft-3d-linear"): blockwise_to_interleaved,
    ("peft-3d-positional", "peft-3d-linear"): positional_to_linear,
    ("nemo-automodel-3d-swapped", "peft-3d-linear"): positional_to_linear,
    ("megatron-3d-per-projection", "peft-3d-linear"): per_projection_to_linear,
    ("tinker-raw", "peft-per-expert"): tinker_to_per_expert,
    ("causal-lm", "conditional-generation"): causal_to_conditional,
    ("conditional-generation", "causal-lm"): conditional_to_causal,
}
