"""Shared helpers of the transfer methods: loading models/adapters, peak memory, progress, PEFT output."""

from __future__ import annotations

import json
import re
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MOD = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class PhaseMemory:
    """Peak RSS per phase: ``with mem.phase("teacher"): ...`` resets the high-water mark on entry (VmHWM via
    /proc/self/clear_refs) and records {"start_mb", "peak_mb"} on exit. ``peak()``: the max over phases (and over
    what was measured before the first phase, when ``carry`` is given). Linux; elsewhere ru_maxrss (no reset)."""

    def __init__(self, carry: float = 0.0):
        self.phases: dict[str, dict] = {}
        self._carry = carry

    def phase(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            import gc

            gc.collect()
            start = rss_mb()
            reset_peak_rss()
            try:
                yield
            finally:
                self.phases[name] = {"start_mb": start, "peak_mb": peak_rss_mb()}

        return cm()

    def peak(self) -> float:
        return max([self._carry] + [p["peak_mb"] for p in self.phases.values()])

    def to_dict(self, mode: str, note: str = "") -> dict:
        d = {"mode": mode, "peak_rss_mb_by_phase": self.phases, "peak_rss_mb": self.peak()}
        if note:
            d["note"] = note
        return d


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path, dev=None):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return m.to(dev or device()).eval()


def load_tokenizer(path):
    """The model folder's tokenizer, or None when it has none (tiny test models use raw ids)."""
    p = Path(path)
    if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    if (p / "tokenizer.json").exists():
        # the tokenizer.json pipeline itself: AutoTokenizer may substitute the model family's class (transformers
        # 5 maps qwen2 -> Qwen2Tokenizer, which re-splits text its own way and breaks custom tokenizers)
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(p))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(p))


def progress(enabled: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from regraft.cli._common import stderr_console

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=stderr_console(), transient=True, disable=not enabled)


@dataclass
class LoraFactor:
    module: str  # e.g. model.layers.3.self_attn.q_proj
    layer: int
    role: str
    A: object  # numpy r x d_in
    B: object  # numpy d_out x r
    scale: float


def read_factors(adapter_dir) -> tuple[object, dict[str, LoraFactor], list[str]]:
    """(AdapterSpec, module -> LoraFactor for dense linear LoRA modules, skipped module names with a reason)."""
    import numpy as np
    from safetensors import safe_open

    from regraft.inspection.adapter import read_adapter

    spec = read_adapter(adapter_dir)
    out, skipped = {}, []
    f = safe_open(str(Path(spec.path) / spec.weights_file), framework="pt") if spec.weights_file.endswith(
        ".safetensors") else None
    for m in spec.modules:
        mm = _MOD.match(m.module)
        if m.kind != "lora" or mm is None or m.a is None or m.b is None or m.expert is not None or f is None:
            skipped.append(f"{m.module} ({m.kind}{', expert' if m.expert is not None else ''}: not projected)")
            continue
        A = f.get_tensor(m.a.name).double().numpy()
        B = f.get_tensor(m.b.name).double().numpy()
        out[m.module] = LoraFactor(m.module, int(mm.group(1)), mm.group(3), A.astype(np.float64),
                                   B.astype(np.float64), spec.scale(m.module))
    return spec, out, skipped


def module_name(layer: int, role: str) -> str:
    part = "self_attn" if role in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"model.layers.{layer}.{part}.{role}"


def write_lora(out: Path, spec, factors: dict[str, tuple], target_dir, report: dict, force: bool = False,
               inputs=()) -> Path:
    """Write a PEFT LoRA atomically (issue 5's writer). ``factors``: module -> (A, B, scale applied).
    Scales are folded into B against the config's alpha/r, so rank/alpha semantics stay those of the source."""
    import math

    import torch

    from regraft.port.write import check_output, write_peft

    out = check_output(out, [spec.path, target_dir, *inputs], force)
    r, alpha, rs = int(spec.r), float(spec.alpha), bool(spec.use_rslora)
    s_cfg = alpha / math.sqrt(r) if rs else alpha / r
    tensors, names = {}, []
    for name, (A, B, s) in sorted(factors.items()):
        A = torch.as_tensor(A, dtype=torch.float32)
        B = torch.as_tensor(B, dtype=torch.float32) * float(s / s_cfg)
        if A.shape[0] != r:  # rank_pattern module: zero-pad to the config rank (exact)
            pad = r - A.shape[0]
            A = torch.cat([A, A.new_zeros(pad, A.shape[1])]) if pad > 0 else A[:r]
            B = torch.cat([B, B.new_zeros(B.shape[0], pad)], 1) if pad > 0 else B[:, :r]
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.contiguous()
        names.append(name)
    cfg = {k: v for k, v in dict(spec.config).items()
           if k not in ("rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern",
                        "target_parameters", "modules_to_save", "use_dora")}
    cfg.update({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rs, "target_modules": names,
                "base_model_name_or_path": str(target_dir), "rank_pattern": {}, "alpha_pattern": {},
                "task_type": spec.config.get("task_type") or "CAUSAL_LM"})
    return write_peft(out, cfg, tensors, report)


def kl_rows(logp_p, logp_q):
    """KL(p || q) per row from log-probabilities (torch)."""
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


def to_jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def dumps(d) -> str:
    return json.dumps(d, indent=2, default=to_jsonable)


@dataclass
class Report:
    """What a transfer method did and measured. ``to_dict`` is what goes into regraft_transfer.json."""

    method: str
    out: str | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def to_dict(self) -> dict:
        return json.loads(dumps(asdict(self)))
