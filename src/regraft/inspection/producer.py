"""Which tool produced an adapter folder, and in which tensor layout (files and headers only, no torch).

The layouts and their sources are data: ``catalog/layouts.json``. This module only reads the evidence:

- the files present (``adapters.safetensors`` = MLX-LM, ``automodel_peft_config.json`` = NeMo-Automodel);
- adapter_config.json keys (``fine_tune_type``/``lora_parameters`` = MLX-LM; ``peft_version``; torchtune's four
  keys in its order);
- README.md tags / text (Unsloth, AutoTrain, LLaMA-Factory, axolotl, TRL write PEFT files with their model card);
- trainer files beside them (AutoTrain's ``training_params.json``, LLaMA-Factory's ``llamaboard_config.yaml``);
- tensor names and shapes (Tinker ``experts.w1``, Megatron per-projection 3-D, PEFT fused ParamWrappers).

Fused 3-D expert LoRA has two orientations with the same key names (PEFT 0.18 positional vs >= 0.19 nn.Linear):

    parameter [E, out, in]     linear:     A [E*r, in]   B [out, E*r]
                               positional: A [E*r, out]  B [in,  E*r]

Both widths of gate_up ([E, 2I, H]) are equal where 2*I == H, and of down ([E, H, I]) where I == H; then the
shapes of that parameter alone say nothing. With both parameters present their widths must chain
(gate_up.in == down.out), which decides; otherwise ``peft_version`` decides; otherwise the layout is ``unknown``.
Block-wise (Unsloth before unsloth-zoo#1269) vs interleaved lora_B have identical files: never decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PREFIX = "base_model.model."
_README_TAGS = (  # first match wins: Unsloth model cards also carry the 'trl' tag
    ("unsloth", re.compile(r"\bunsloth\b", re.IGNORECASE)),
    ("autotrain", re.compile(r"(^|\n)\s*-\s*autotrain\s*(\n|$)|trained using autotrain", re.IGNORECASE)),
    ("llama-factory", re.compile(r"llama[-_ ]?factory|llamaboard", re.IGNORECASE)),
    ("axolotl", re.compile(r"\baxolotl\b", re.IGNORECASE)),
    ("trl", re.compile(r"(^|\n)\s*-\s*trl\s*(\n|$)|\btrl\b.*\b(sft|dpo|grpo)\b", re.IGNORECASE)),
)
_PEFT_README_VERSION = re.compile(r"PEFT\s+(\d+\.\d+(?:\.\d+)?)")


@lru_cache(maxsize=1)
def layouts_data() -> dict:
    from regraft.catalog import _read

    return _read(".", "layouts.json")


@dataclass
class ProducerReport:
    """What made the adapter and how its tensors are laid out; ``unknown`` fields name what is missing."""

    producer: str  # peft | unsloth | autotrain | torchtune | llama-factory | axolotl | trl | mlx-lm | nemo-automodel | megatron-bridge / skyrl | tinker | unknown
    layout: str  # a key of layouts.json "layouts", or "unknown"
    evidence: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # what would decide an unknown
    candidates: list[str] = field(default_factory=list)  # layouts still possible when layout == "unknown"
    peft_version: str | None = None
    expert_layout: str | None = None  # the layout of the expert part (None: no expert LoRA)
    fused: dict = field(default_factory=dict)  # param -> {"a": shape, "b": shape} for fused 3-D experts
    weights_file: str | None = None
    orientation: str | None = None  # fused experts: linear | positional, when the files decide it

    def to_dict(self) -> dict:
        return {"producer": self.producer, "layout": self.layout, "expert_layout": self.expert_layout,
                "evidence": self.evidence, "missing": self.missing, "candidates": self.candidates,
                "peft_version": self.peft_version, "weights_file": self.weights_file}


def inspect_producer(path: str | Path, widths: tuple[int, int] | None = None) -> ProducerReport:
    """Read the folder and decide producer and layout. ``widths`` = (hidden_size, moe_intermediate_size) of the
    base, when known, lets the shapes of a single fused parameter decide its orientation."""
    from regraft.inspection.files import inside, read_json, read_text
    from regraft.inspection.safetensors_header import read_header

    path = Path(path).expanduser()
    config = read_json(inside(path, "adapter_config.json"), "adapter_config.json") \
        if (path / "adapter_config.json").is_file() else {}
    readme = read_text(inside(path, "README.md"), "README.md")[:200_000] if (path / "README.md").is_file() else ""
    files = {p.name for p in path.iterdir()} if path.is_dir() else set()
    shapes: dict[str, tuple] = {}
    weights = next((f for f in ("adapter_model.safetensors", "adapters.safetensors") if f in files), None)
    if weights:
        shapes = {k: tuple(t.shape) for k, t in read_header(inside(path, weights)).tensors.items()}
    return decide(config, shapes, files, readme, widths, weights)


def decide(config: dict, shapes: dict[str, tuple], files: set[str] = frozenset(), readme: str = "",
           widths: tuple[int, int] | None = None, weights_file: str | None = None) -> ProducerReport:
    """Pure: producer and layout from the config, tensor shapes, file names and README text."""
    rep = ProducerReport("unknown", "unknown", weights_file=weights_file)
    rep.peft_version = config.get("peft_version") or _readme_version(readme)
    if not shapes:
        rep.missing.append("the weights file (adapter_model.safetensors or adapters.safetensors)")
        rep.producer = _producer(config, files, readme, rep)
        return rep
    if _is_mlx(config, shapes, files):
        rep.producer, rep.layout = "mlx-lm", "mlx-lm"
        rep.evidence.append("keys end in .lora_a/.lora_b" + (" in adapters.safetensors" if "adapters.safetensors"
                                                              in files else ""))
        if any(".switch_mlp." in k for k in shapes):
            rep.expert_layout = "mlx-lm"
            rep.evidence.append("MoE experts under switch_mlp (SwitchLinear LoRA): not convertible by regraft")
        return rep
    rep.producer = _producer(config, files, readme, rep)
    expert = _expert_layout(config, shapes, widths, rep)
    rep.expert_layout = expert
    if expert is None:
        rep.layout = "peft-standard" if _all_peft_keys(shapes, rep) else "unknown"
    else:
        rep.layout = expert
    return rep


def _readme_version(readme: str) -> str | None:
    m = _PEFT_README_VERSION.search(readme)
    return m.group(1) if m else None


def _is_mlx(config: dict, shapes: dict, files: set) -> bool:
    mlx_cfg = any(k in config for k in ("fine_tune_type", "lora_parameters")) or (
        "num_layers" in config and "peft_type" not in config)
    mlx_keys = any(k.endswith((".lora_a", ".lora_b")) for k in shapes)
    return mlx_keys and (mlx_cfg or "adapters.safetensors" in files or "peft_type" not in config)


def _producer(config: dict, files: set, readme: str, rep: ProducerReport) -> str:
    if "automodel_peft_config.json" in files:
        rep.evidence.append("automodel_peft_config.json present")
        return "nemo-automodel"
    for name, rx in _README_TAGS:
        if readme and rx.search(readme):
            rep.evidence.append(f"README.md names {name}")
            return name
    if "training_params.json" in files:
        rep.evidence.append("training_params.json present (AutoTrain's training arguments)")
        return "autotrain"
    if "llamaboard_config.yaml" in files or "training_args.yaml" in files:
        rep.evidence.append("LLaMA-Factory training files present")
        return "llama-factory"
    if _is_torchtune(config):
        rep.evidence.append("adapter_config.json holds only torchtune's keys in its order (r, lora_alpha, target_modules, "
                            "peft_type[, base_model_name_or_path])" + (", and adapter_model.pt (torchtune's own copy, "
                                                                       "not read)" if "adapter_model.pt" in files else ""))
        return "torchtune"
    base = str(config.get("base_model_name_or_path") or "")
    if base.lower().startswith("unsloth/"):
        rep.evidence.append(f"base_model_name_or_path {base} is an Unsloth upload")
        return "unsloth"
    if config.get("peft_type"):
        rep.evidence.append("adapter_config.json has peft_type" + (f", peft_version {rep.peft_version}"
                                                                    if rep.peft_version else " (no peft_version)"))
        return "peft"
    rep.missing.append("adapter_config.json with peft_type, or a README naming the trainer")
    return "unknown"


_TORCHTUNE_KEYS = ["r", "lora_alpha", "target_modules", "peft_type"]  # torchtune tune_to_peft_adapter_config + json.dump


def _is_torchtune(config: dict) -> bool:
    """torchtune's HF checkpointer writes the recipe's adapter config (exactly these keys, in this order) plus the
    base repo id; nothing else writes a PEFT config without task_type, lora_dropout or bias."""
    keys = list(config)
    return keys[:4] == _TORCHTUNE_KEYS and set(keys[4:]) <= {"base_model_name_or_path"} and config["peft_type"] == "LORA"


def _all_peft_keys(shapes: dict, rep: ProducerReport) -> bool:
    stray = [k for k in shapes if not re.search(r"\.(lora_[AB]\.weight|lora_[AB]\.bias|lora_embedding_[AB]|"
                                                r"lora_magnitude_vector(\.weight)?|weight|bias|"
                                                r"trainable_tokens_delta)$", k)]
    if stray:
        rep.missing.append(f"{len(stray)} tensors of no known layout (e.g. {stray[0]})")
        return False
    return True


def _expert_layout(config: dict, shapes: dict, widths, rep: ProducerReport) -> str | None:
    keys = list(shapes)
    if any(re.search(r"\.experts\.w[123]\.lora_[AB]", k) and len(shapes[k]) == 3 for k in keys):
        rep.producer = "tinker"
        rep.evidence.append("3-D expert tensors named experts.w1/w2/w3 (Tinker's raw download)")
        return "tinker-raw"
    if any("lora_gate_and_up" in k for k in keys):
        rep.producer = "nemo-automodel"
        rep.evidence.append("grouped expert tensors lora_gate_and_up_* (NeMo-Automodel native)")
        return "nemo-automodel-grouped"
    per_proj = [k for k in keys if re.search(r"\.experts\.(gate_up_proj|down_proj)\.lora_[AB]\.weight$", k)]
    if per_proj and all(len(shapes[k]) == 3 for k in per_proj):
        if rep.producer in ("peft", "unknown"):
            rep.producer = "megatron-bridge / skyrl"
        rep.evidence.append("3-D expert-leading tensors named experts.gate_up_proj/down_proj (per projection)")
        return "megatron-3d-per-projection"
    fused = _fused_pairs(shapes)
    if fused:
        rep.fused = fused
        return _fused_orientation(config, fused, widths, rep)
    if any(re.search(r"\.experts\.\d+\.", k) for k in keys):
        rep.evidence.append("per-expert keys experts.<e>.<proj>")
        return "peft-per-expert"
    return None


def _fused_pairs(shapes: dict) -> dict:
    """nesting -> {"a": shape, "b": shape} of the first layer's fused ParamWrappers (PEFT target_parameters)."""
    out: dict[int, dict] = {}
    for k, s in shapes.items():
        m = re.search(r"layers\.(\d+)\..*\.experts((?:\.base_layer)*)\.lora_([AB])\.weight$", k)
        if not m or len(s) != 2:
            continue
        nest = m.group(2).count(".base_layer")
        out.setdefault((int(m.group(1)), nest), {})[m.group(3).lower()] = s
    if not out:
        return {}
    first = min(layer for layer, _ in out)
    return {nest: v for (layer, nest), v in out.items() if layer == first and "a" in v and "b" in v}


def _fused_orientation(config: dict, fused: dict, widths, rep: ProducerReport) -> str:
    """peft-3d-linear | peft-3d-positional | unknown, from chained widths, the base's widths, or peft_version."""
    interleaved = "peft-3d-linear"
    if rep.producer == "unsloth":
        rep.candidates = ["peft-3d-linear", "unsloth-3d-blockwise"]
    if rep.producer == "nemo-automodel":
        rep.candidates = ["peft-3d-linear", "nemo-automodel-3d-swapped"]
    trust_version = rep.producer != "nemo-automodel"  # its exports wrote 0.18 numbers under newer PEFT versions
    orient = _orient_by_chain(fused) or _orient_by_widths(fused, widths) or (
        _orient_by_version(rep.peft_version) if trust_version else None)
    if orient is None:
        rep.candidates = sorted(set(rep.candidates) | {"peft-3d-linear", "peft-3d-positional"})
        rep.missing.append("the orientation of the fused expert LoRA: the shapes fit both PEFT 0.18 (positional) and "
                           ">= 0.19 (nn.Linear); give peft_version, the base config (hidden_size, "
                           "moe_intermediate_size), or a local base for the numbers")
        return "unknown"
    how, value = orient
    rep.orientation = value
    rep.evidence.append(f"fused 3-D expert LoRA (target_parameters), orientation {value} by {how}")
    if value == "positional":
        return "nemo-automodel-3d-swapped" if rep.producer == "nemo-automodel" else "peft-3d-positional"
    if rep.producer == "unsloth":
        rep.missing.append("whether lora_B was trained block-wise (Unsloth before unsloth-zoo#1269, 2026-09-17) or "
                           "interleaved: the files are identical; a local base lets the numbers decide")
        return "unknown"
    return interleaved


def _orient_by_chain(fused: dict):
    """With gate_up (nesting 1) and down (nesting 0) both present: linear chains gate_up.A.in == down.B.out."""
    if 0 not in fused or 1 not in fused:
        return None
    gu, dn = fused[1], fused[0]
    lin = gu["a"][1] == dn["b"][0] and gu["b"][0] == 2 * dn["a"][1]
    pos = gu["b"][0] == dn["a"][1] and gu["a"][1] == 2 * dn["b"][0]
    if lin != pos:
        return "the widths of gate_up and down", "linear" if lin else "positional"
    return None


def _orient_by_widths(fused: dict, widths):
    if not widths or not all(widths):
        return None
    H, I = widths
    votes = set()
    for nest, p in fused.items():
        out_f, in_f = (2 * I, H) if nest >= 1 else (H, I)
        lin = p["a"][1] == in_f and p["b"][0] == out_f
        pos = p["a"][1] == out_f and p["b"][0] == in_f
        if lin != pos:
            votes.add("linear" if lin else "positional")
    if len(votes) == 1:
        return f"the base widths (hidden {H}, moe_intermediate {I})", votes.pop()
    return None


def _orient_by_version(version: str | None):
    if not version:
        return None
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return None
    return f"peft_version {version}", "linear" if (major, minor) >= (0, 19) else "positional"


def producer_of(spec, widths: tuple[int, int] | None = None) -> ProducerReport:
    """:func:`decide` for an already read :class:`~regraft.inspection.adapter.AdapterSpec` (its header is reused;
    only the folder listing and README.md are read)."""
    from regraft.inspection.files import inside, read_text

    path = Path(spec.path)
    files = {p.name for p in path.iterdir()} if path.is_dir() else set()
    readme = read_text(inside(path, "README.md"), "README.md")[:200_000] if "README.md" in files else ""
    shapes = {k: tuple(t.shape) for k, t in spec.tensors.items()}
    return decide(spec.config, shapes, files, readme, widths, spec.weights_file)


def runtime_behaviour(layout: str, runtime: str | None = None) -> list[dict]:
    """The versioned entries of layouts.json for ``layout`` (optionally one runtime)."""
    rows = layouts_data()["runtimes"].get(layout, [])
    return [r for r in rows if runtime is None or r["runtime"] == runtime]
