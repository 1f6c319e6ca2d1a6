"""Fallback for a model_type without an architecture file: derive one from a transformers meta-device build.

Only used when transformers is installed and the config is complete. The result is flagged (``inferred``): names
and shapes are those of the transformers 5 modules, and the checkpoint namespace is assumed to be the same (true
for dense models; MoE checkpoints that transformers fuses on load are not recognised here).
"""

from __future__ import annotations

import re

_LAYER = re.compile(r"^(?P<prefix>.*?layers\.)(?P<i>\d+)\.(?P<rest>.+)$")


def _too_big(config: dict) -> bool:
    """A meta-device build still creates every module object: a config (possibly hostile) that asks for millions of
    them would take minutes and gigabytes. Real models have at most a few hundred layers and experts."""
    found: dict[str, int] = {"layers": 1, "experts": 1}

    def walk(d, depth=0):
        if depth > 4 or not isinstance(d, dict):
            return
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, depth + 1)
            elif type(v) is int and isinstance(k, str):
                kind = "layers" if re.search(r"(^|_)(n_)?layers?$", k) else "experts" if k.endswith("experts") else None
                if kind:
                    found[kind] = max(found[kind], v)

    walk(config)
    return found["layers"] > 2048 or found["experts"] > 8192 or found["layers"] * found["experts"] > 400_000


def infer_architecture_data(config: dict) -> dict | None:
    if _too_big(config):
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        return None
    try:
        cfg = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception:  # transformers raises many types for configs it cannot build
        return None
    kinds = {}
    for name, mod in model.named_modules():
        kinds[name] = "linear" if isinstance(mod, torch.nn.Linear) else (
            "embedding" if isinstance(mod, torch.nn.Embedding) else "module")
    globals_, layers, prefix = [], {}, None
    for pname, p in model.named_parameters():
        owner, _, leaf = pname.rpartition(".")
        shape = list(p.shape)
        if leaf in ("weight", "bias"):
            if leaf == "bias":
                continue
            entry = {"name": owner, "role": owner.rsplit(".", 1)[-1], "kind": kinds.get(owner, "module"), "shape": shape,
                     "bias": f"{owner}.bias" in dict(model.named_parameters())}
        else:
            entry = {"name": pname, "role": leaf, "kind": "param", "shape": shape}
        m = _LAYER.match(entry["name"])
        if m:
            prefix = m.group("prefix")
            layers.setdefault(int(m.group("i")), []).append({**entry, "name": m.group("rest")})
        else:
            globals_.append(entry)
    if prefix is None:
        return None
    blocks, layer_types = {}, []
    for i in sorted(layers):
        key = repr(layers[i])
        name = next((b for b, v in blocks.items() if repr(v) == key), f"block{len(blocks)}")
        blocks[name] = layers[i]
        layer_types.append(name)
    return {"schema_version": 1, "model_type": config.get("model_type"), "architectures": config.get("architectures"),
            "source": f"inferred from a transformers meta-device build of {type(model).__name__}",
            "config_root": None, "prefix": prefix.rsplit("layers.", 1)[0], "layer_prefix": prefix + "{i}.",
            "layer_types": "explicit", "explicit_layer_types": layer_types, "defaults": {}, "globals": globals_,
            "blocks": blocks, "inferred": True,
            "notes": ["Architecture inferred from transformers (no architecture file for this model_type); the "
                      "checkpoint namespace is assumed equal to the module names."]}
