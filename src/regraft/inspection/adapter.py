"""AdapterSpec: a PEFT LoRA adapter read from adapter_config.json and the safetensors header (no tensor loaded).

Every key layout PEFT writes is understood:

- standard ``...self_attn.q_proj.lora_A.weight`` [r, in] / ``lora_B.weight`` [out, r] (+ ``lora_B.bias``);
- embedding LoRA ``...embed_tokens.lora_embedding_A`` [r, vocab] / ``lora_embedding_B`` [hidden, r];
- DoRA magnitudes ``...lora_magnitude_vector`` [out];
- MoE experts per expert (transformers 4 / legacy): ``...mlp.experts.E.gate_proj.lora_A.weight``;
- MoE experts fused (transformers 5, PEFT >= 0.18 ``target_parameters``): nested ParamWrappers
  ``...mlp.experts.base_layer.lora_A.weight`` [E*r, in] / ``lora_B.weight`` [out, E*r] and ``...mlp.experts.lora_*``;
  the keys do not name the parameter, so it is inferred from shapes (gate_up: out = 2*I; down: in = I);
- full copies (``modules_to_save``, an embedding's ``base_layer.weight``) and trainable tokens
  (``token_adapter.trainable_tokens_delta``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import FileFormatError, InputError, UnsafeInputError
from regraft.inspection.files import inside, read_json
from regraft.inspection.safetensors_header import TensorInfo, read_header

PREFIX = "base_model.model."
_LAYER = re.compile(r"layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")
KNOWN_KEYS = {
    "peft_type", "task_type", "base_model_name_or_path", "revision", "r", "lora_alpha", "lora_dropout",
    "target_modules", "target_parameters", "exclude_modules", "layers_to_transform", "layers_pattern",
    "modules_to_save", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "lora_bias", "bias",
    "fan_in_fan_out", "init_lora_weights", "inference_mode", "trainable_token_indices", "layer_replication",
    "peft_version", "auto_mapping", "megatron_config", "megatron_core", "loftq_config", "eva_config",
    "corda_config", "use_qalora", "qalora_group_size", "alora_invocation_tokens", "runtime_config",
    "lora_ga_config", "arrow_config", "ensure_weight_tying", "target_modules_regex", "layers_to_transform_regex",
    "use_bdlora", "bdlora_config", "astra_config", "qa_lora_config", "ga_config",
}


@dataclass
class AdapterModule:
    """The tensors an adapter holds for one module (name in model namespace, no ``base_model.model.``)."""

    module: str
    kind: str  # lora | lora_embedding | fused_experts | full_copy | trainable_tokens
    layer: int | None = None
    expert: int | None = None
    a: TensorInfo | None = None
    b: TensorInfo | None = None
    bias: TensorInfo | None = None
    magnitude: TensorInfo | None = None  # DoRA
    full: TensorInfo | None = None  # modules_to_save copy / embedding base_layer / trainable tokens delta
    nesting: int = 0  # fused experts: 1 = experts.base_layer (inner wrapper), 0 = experts (outer)
    param: str | None = None  # fused experts: gate_up_proj | down_proj (inferred)

    @property
    def rank(self) -> int | None:
        if self.a is None:
            return None
        return self.a.shape[0]

    @property
    def tensors(self) -> list[TensorInfo]:
        return [t for t in (self.a, self.b, self.bias, self.magnitude, self.full) if t is not None]

    @property
    def leaf(self) -> str:
        return self.module.rsplit(".", 1)[-1]


@dataclass
class AdapterSpec:
    path: Path
    config: dict
    tensors: dict[str, TensorInfo]
    modules: list[AdapterModule]
    weights_file: str
    unknown_keys: list[str] = field(default_factory=list)  # adapter_config keys this regraft does not know
    stray_tensors: list[str] = field(default_factory=list)  # tensor names that fit no PEFT layout
    bytes_read: int = 0

    # -- config fields --------------------------------------------------------------------------------------
    def _get(self, key, default=None):
        v = self.config.get(key)
        return default if v is None else v

    @property
    def r(self) -> int:
        return int(self._get("r", 8))

    @property
    def alpha(self) -> float:
        return float(self._get("lora_alpha", 8))

    @property
    def use_rslora(self) -> bool:
        return bool(self._get("use_rslora", False))

    @property
    def use_dora(self) -> bool:
        return bool(self._get("use_dora", False))

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def target_modules(self):
        return self.config.get("target_modules")

    @property
    def target_parameters(self) -> list[str]:
        return list(self._get("target_parameters", []))

    @property
    def modules_to_save(self) -> list[str]:
        return list(self._get("modules_to_save", []))

    @property
    def rank_pattern(self) -> dict:
        return dict(self._get("rank_pattern", {}))

    @property
    def alpha_pattern(self) -> dict:
        return dict(self._get("alpha_pattern", {}))

    @property
    def layers_to_transform(self):
        return self.config.get("layers_to_transform")

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def lora_modules(self) -> list[AdapterModule]:
        return [m for m in self.modules if m.kind in ("lora", "lora_embedding", "fused_experts")]

    @property
    def layers(self) -> list[int]:
        return sorted({m.layer for m in self.modules if m.layer is not None})

    @property
    def layout(self) -> str:
        """standard | moe-v4-per-expert | moe-v5-fused (what the expert part looks like, if any)."""
        if any(m.kind == "fused_experts" for m in self.modules):
            return "moe-v5-fused"
        if any(m.expert is not None for m in self.modules):
            return "moe-v4-per-expert"
        return "standard"

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """Rank and alpha of a module after rank_pattern/alpha_pattern (PEFT's matching: (^|.*\\.)KEY$)."""
        r, alpha = self.r, self.alpha
        key = _pattern_key(self.rank_pattern, module)
        if key is not None:
            r = int(self.rank_pattern[key])
        key = _pattern_key(self.alpha_pattern, module)
        if key is not None:
            alpha = float(self.alpha_pattern[key])
        return r, alpha

    def scale(self, module: str) -> float:
        """The effective LoRA scale PEFT applies to ``module``: alpha/r, or alpha/sqrt(r) with rsLoRA."""
        r, alpha = self.rank_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def describe(self) -> dict:
        roles: dict[str, int] = {}
        for m in self.modules:
            key = _EXPERT.sub(".experts.{e}.", _LAYER.sub("layers.{i}.", m.module))
            roles[f"{key} [{m.kind}]"] = roles.get(f"{key} [{m.kind}]", 0) + 1
        scales = sorted({round(self.scale(m.module), 6) for m in self.lora_modules})
        return {
            "path": str(self.path), "weights_file": self.weights_file, "peft_type": self.config.get("peft_type"),
            "peft_version": self.config.get("peft_version"), "base_model_name_or_path": self.base_model,
            "revision": self.config.get("revision"), "r": self.r, "lora_alpha": self.alpha,
            "use_rslora": self.use_rslora, "use_dora": self.use_dora, "lora_bias": bool(self._get("lora_bias", False)),
            "target_modules": self.target_modules, "target_parameters": self.target_parameters or None,
            "modules_to_save": self.modules_to_save or None, "rank_pattern": self.rank_pattern or None,
            "alpha_pattern": self.alpha_pattern or None, "layers_to_transform": self.layers_to_transform,
            "trainable_token_indices": self.config.get("trainable_token_indices"),
            "layout": self.layout, "layers": _ranges(self.layers), "tensors": len(self.tensors),
            "tensor_bytes": sum(t.nbytes for t in self.tensors.values()),
            "dtypes": sorted({t.dtype for t in self.tensors.values()}), "effective_scales": scales,
            "modules": roles, "unknown_config_keys": self.unknown_keys, "stray_tensors": self.stray_tensors,
        }


def _pattern_key(patterns: dict, module: str) -> str | None:
    for key in patterns:
        if len(module) > 1000:  # no real module name is this long; a regex on it could run for hours
            if module.endswith(key):
                return key
            continue
        try:
            if re.match(rf"(^|.*\.){key}$", module):
                return key
        except re.error:
            if module.endswith(key):
                return key
    return None


def _ranges(xs: list[int]) -> str:
    if not xs:
        return "-"
    out, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(out)


def read_adapter(path: str | Path, *, allow_pickle: bool = False) -> AdapterSpec:
    """Read a PEFT adapter folder. Pickled ``adapter_model.bin`` is refused unless ``allow_pickle``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"Cannot read adapter '{path}': " + ("no such folder." if not path.exists() else
                         "it is a file; expected a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)."))
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        hint = " It looks like a model folder (config.json); pass it as SOURCE/TARGET instead." \
            if (path / "config.json").is_file() else ""
        raise InputError(f"Cannot read adapter '{path}': no adapter_config.json.{hint}")
    config = read_json(inside(path, "adapter_config.json"), "adapter_config.json")
    _validate_config(config, cfg_path)
    st = path / "adapter_model.safetensors"
    if st.is_file():
        header = read_header(inside(path, st.name))
        tensors, weights_file, nbytes = header.tensors, st.name, header.bytes_read
    elif (path / "adapter_model.bin").is_file():
        if not allow_pickle:
            raise UnsafeInputError(f"'{path / 'adapter_model.bin'}' is a pickle, which can run code when loaded. "
                                   "regraft does not unpickle by default. Convert it to safetensors, or pass "
                                   "--allow-pickle to read it with torch's weights_only loader.")
        tensors, weights_file, nbytes = _read_bin(inside(path, "adapter_model.bin")), "adapter_model.bin", 0
    elif (path / "adapters.safetensors").is_file():
        raise InputError(f"Cannot read adapter '{path}': it is an MLX-LM adapter (adapters.safetensors), not PEFT "
                         f"files. Convert it exactly: regraft port lora {path} --to BASE --layout mlx-lm:peft --out DIR")
    else:
        raise InputError(f"Cannot read adapter '{path}': no adapter_model.safetensors (or .bin) next to "
                         "adapter_config.json. The adapter folder is incomplete.")
    modules, stray = _group(tensors, config)
    unknown = sorted(k for k in config if k not in KNOWN_KEYS)
    return AdapterSpec(path, config, tensors, modules, weights_file, unknown, stray, nbytes)


_TYPES = {"r": int, "lora_alpha": (int, float), "use_rslora": bool, "use_dora": bool, "rank_pattern": dict,
          "alpha_pattern": dict, "target_modules": (list, str), "target_parameters": list,
          "modules_to_save": list, "layers_to_transform": (list, int), "base_model_name_or_path": str,
          "peft_type": str, "lora_bias": bool}


_LORA_KEYS = {"peft_type", "r", "lora_alpha", "target_modules", "target_parameters", "base_model_name_or_path",
              "lora_parameters", "fine_tune_type"}
_MODEL_KEYS = {"model_type", "architectures", "hidden_size", "num_hidden_layers", "vocab_size"}


def _validate_config(config: dict, where: Path) -> None:
    if not config.keys() & _LORA_KEYS and len(config.keys() & _MODEL_KEYS) >= 2:
        raise FileFormatError(f"Invalid adapter_config.json '{where}': it is a model's config.json "
                              f"(model_type {config.get('model_type')!r:.40}, no LoRA keys such as r, lora_alpha, "
                              "target_modules). Save the adapter with PEFT's save_pretrained, or pass the folder as "
                              "a MODEL.")
    for key, typ in _TYPES.items():
        v = config.get(key)
        if v is not None and (not isinstance(v, typ) or (typ is int and isinstance(v, bool))):
            want = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            raise FileFormatError(f"Invalid adapter_config.json '{where}': '{key}' is {type(v).__name__} "
                                  f"{v!r:.60}, expected {want}.")
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise InputError(f"'{where}' is a {peft_type} adapter; regraft handles LoRA adapters (peft_type LORA).")
    for key in ("target_modules", "target_parameters", "modules_to_save", "exclude_modules"):
        v = config.get(key)
        if isinstance(v, list) and not all(isinstance(x, str) for x in v):
            bad = next(x for x in v if not isinstance(x, str))
            raise FileFormatError(f"Invalid adapter_config.json '{where}': '{key}' holds {type(bad).__name__} "
                                  f"{bad!r:.60}, expected a list of module names (strings).")
    r = config.get("r")
    if isinstance(r, int) and r <= 0:
        raise FileFormatError(f"Invalid adapter_config.json '{where}': 'r' is {r}, expected a positive rank.")
    for key, want in (("rank_pattern", int), ("alpha_pattern", (int, float))):
        for k, v in (config.get(key) or {}).items():
            if not isinstance(v, want) or isinstance(v, bool) or (key == "rank_pattern" and v <= 0):
                raise FileFormatError(f"Invalid adapter_config.json '{where}': '{key}' maps {k!r:.60} to "
                                      f"{v!r:.60}, expected a positive {'rank' if key == 'rank_pattern' else 'number'}.")
            risk = _pattern_risk(k)
            if risk:
                raise FileFormatError(f"Invalid adapter_config.json '{where}': '{key}' key {k!r:.60} has {risk}, "
                                      "which can make regex matching run for hours; use a module name or a simpler "
                                      "pattern.")
    _validate_numbers(config, where)


MAX_RANK = 1 << 20
MAX_LAYER = 1 << 20


def _validate_numbers(config: dict, where: Path) -> None:
    """Every number through regraft.numbers: bounded, finite, an int where an int is meant (10**400 as r, NaN as
    alpha, 1e300 in rank_pattern are refused with one line). Linear in the size of the lists."""
    from regraft.numbers import parse_float, parse_int

    at = f"Invalid adapter_config.json '{where}':"
    if config.get("r") is not None:
        parse_int(config["r"], f"{at} 'r'", 1, MAX_RANK, strings=False)
    if config.get("lora_alpha") is not None:
        parse_float(config["lora_alpha"], f"{at} 'lora_alpha'", -1e12, 1e12, strings=False)
    ltt = config.get("layers_to_transform")
    for v in ltt if isinstance(ltt, list) else [ltt] if ltt is not None else []:
        parse_int(v, f"{at} 'layers_to_transform' entry", 0, MAX_LAYER, strings=False)
    for k, v in (config.get("rank_pattern") or {}).items():
        parse_int(v, f"{at} 'rank_pattern' value for {k!r:.60}", 1, MAX_RANK, strings=False)
    for k, v in (config.get("alpha_pattern") or {}).items():
        parse_float(v, f"{at} 'alpha_pattern' value for {k!r:.60}", -1e12, 1e12, strings=False)


def _pattern_risk(key: str) -> str | None:
    """Why a rank/alpha pattern could backtrack catastrophically (nested or repeated repetition), or None."""
    from re import _constants as c, _parser

    try:
        items = _parser.parse(key)
    except (re.error, RecursionError, OverflowError):
        return None  # not a regex: matched literally
    repeats = 0

    def walk(seq, under: bool) -> str | None:
        nonlocal repeats
        for op, av in seq:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                lo, hi, sub = av
                if hi > 1:
                    repeats += 1
                    if under:
                        return "nested repetition"
                why = walk(sub, under or hi > 1)
            elif op is c.BRANCH:
                why = "alternation under repetition" if under else next(
                    (w for b in av[1] if (w := walk(b, under))), None)
            elif op is c.SUBPATTERN:
                why = walk(av[-1], under)
            elif op in (c.ASSERT, c.ASSERT_NOT):
                why = walk(av[1], under)
            elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
                why = "a backreference"
            else:
                why = None
            if why:
                return why
        return "more than one repetition" if repeats > 1 else None

    return walk(items, False)


def _read_bin(path: Path) -> dict[str, TensorInfo]:
    from regraft.errors import need

    torch = need("torch", "reading a pickled adapter_model.bin", "torch")
    try:
        sd = torch.load(path, map_location="meta", weights_only=True)
    except Exception as e:  # torch raises many types for hostile or broken pickles
        raise UnsafeInputError(f"Refused to load '{path}' with weights_only=True: {str(e).splitlines()[0][:200]}")
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    return {k: TensorInfo(k, dtypes.get(v.dtype, str(v.dtype)), tuple(v.shape), path.name,
                          v.numel() * v.element_size()) for k, v in sd.items()}


def _group(tensors: dict[str, TensorInfo], config: dict) -> tuple[list[AdapterModule], list[str]]:
    mods: dict[tuple[str, str], AdapterModule] = {}
    stray: list[str] = []

    def get(module: str, kind: str) -> AdapterModule:
        key = (module, kind)
        if key not in mods:
            lm = _LAYER.search(module + ".")
            em = _EXPERT.search(module + ".")
            mods[key] = AdapterModule(module, kind, int(lm.group(1)) if lm else None,
                                      int(em.group(1)) if em else None)
        return mods[key]

    for name, t in tensors.items():
        key = name[len(PREFIX):] if name.startswith(PREFIX) else name
        for suffix, slot in ((".lora_A.weight", "a"), (".lora_B.weight", "b"), (".lora_B.bias", "bias"),
                             (".lora_A.bias", "bias"), (".lora_embedding_A", "a"), (".lora_embedding_B", "b"),
                             (".lora_magnitude_vector.weight", "magnitude"), (".lora_magnitude_vector", "magnitude")):
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                kind = "lora_embedding" if "embedding" in suffix else "lora"
                nesting = 0
                while module.endswith(".base_layer"):
                    module, nesting = module[: -len(".base_layer")], nesting + 1
                if module.endswith("mlp.experts") or module.endswith(".experts"):
                    kind = "fused_experts"
                    module = f"{module}#{nesting}"
                m = get(module, kind)
                m.nesting = nesting
                setattr(m, slot, t)
                break
        else:
            if key.endswith(".token_adapter.trainable_tokens_delta"):
                get(key[: -len(".token_adapter.trainable_tokens_delta")], "trainable_tokens").full = t
            elif key.endswith(".base_layer.weight"):
                get(key[: -len(".base_layer.weight")], "full_copy").full = t
            elif key.endswith(".weight") or key.endswith(".bias"):
                module = key.rsplit(".", 1)[0]
                leaf_ok = any(module == s or module.endswith("." + s) for s in config.get("modules_to_save") or [])
                if leaf_ok or key.endswith(".weight"):
                    get(module, "full_copy").full = t
                else:
                    stray.append(name)
            else:
                stray.append(name)
    out = list(mods.values())
    _infer_fused_params(out, config)
    for m in out:
        if m.kind == "fused_experts":
            m.module = m.module.split("#")[0]
    return sorted(out, key=lambda m: (m.layer if m.layer is not None else -1, m.module, m.expert or 0, m.kind)), stray


def _infer_fused_params(mods: list[AdapterModule], config: dict) -> None:
    """Label fused-expert wrappers gate_up_proj / down_proj from shapes (gate_up.out == 2 * down.in)."""
    by_layer: dict[str, list[AdapterModule]] = {}
    for m in mods:
        if m.kind == "fused_experts":
            by_layer.setdefault(m.module.split("#")[0], []).append(m)
    params = [p.rsplit(".", 1)[-1] for p in (config.get("target_parameters") or [])]
    for group in by_layer.values():
        if len(group) == 2 and all(g.a is not None and g.b is not None for g in group):
            x, y = group
            if x.b.shape[0] == 2 * y.a.shape[1] and y.b.shape[0] == x.a.shape[1]:
                x.param, y.param = "gate_up_proj", "down_proj"
            elif y.b.shape[0] == 2 * x.a.shape[1] and x.b.shape[0] == y.a.shape[1]:
                x.param, y.param = "down_proj", "gate_up_proj"
        elif len(group) == 1 and len(params) == 1:
            group[0].param = params[0]
        for g in group:  # fallback: PEFT 0.21 nests gate_up_proj inside (experts.base_layer)
            if g.param is None:
                g.param = "gate_up_proj" if g.nesting >= 1 else "down_proj"
