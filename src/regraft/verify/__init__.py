"""``regraft verify ADAPTER --on MODEL``: prove the adapter is applied, tensor by tensor, on the real stack.

The model is loaded with transformers and the adapter with PEFT (the loader users run). Then, independently of
what PEFT reports:

1. **injected**: every adapter module's update ``s * B @ A`` (per expert for MoE) is recomputed from the files and
   compared with the update PEFT actually built in the model (``get_delta_weight``); a module of the file with no
   counterpart in the model is *dropped* (PEFT drops unexpected keys silently: extra layers, a dense MLP LoRA on a
   MoE model, renamed prefixes); a counterpart with another value is *mismatched*;
2. **runs**: forward hooks on probe inputs show which adapted modules are on the forward path;
3. **changes the output**: each adapted module is called on its captured probe input with the adapter on and off;
   MoE experts are also called with every expert forced, so each expert's LoRA is shown to change its output.

Modules PEFT created without any tensor in the file (zero-initialised: the "missing keys" case) are listed too.
With a reference model, source+adapter and target+adapter are compared on the probes (top-1 agreement, KL).
Coverage is complete when nothing is dropped, mismatched, or without effect; otherwise ``ok`` is False.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import InputError, need

TOL = 1e-4  # relative error allowed between the file's update and PEFT's (float32 arithmetic)
EFFECT_MIN = 1e-7  # relative output change below this counts as "no effect"
_PREFIX = "base_model.model."


@dataclass
class ModuleCheck:
    module: str  # per expert for MoE: model.layers.L.mlp.experts.E.gate_proj
    status: str  # applied | dropped | mismatch | zero-init | full-copy ok | full-copy mismatch | not-checked
    rel_err: float | None = None
    norm: float | None = None  # ||s B A|| from the file (or of what PEFT built for zero-init)
    runs: bool | None = None
    effect: float | None = None  # relative output change of the module (adapter on vs off) on probes
    note: str = ""

    @property
    def problem(self) -> bool:
        return self.status in ("dropped", "mismatch", "full-copy mismatch") or (self.status == "applied" and (
            self.runs is False or (self.effect is not None and self.effect < EFFECT_MIN and (self.norm or 0) > 0)))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class VerifyReport:
    adapter: str
    model: str
    modules: list[ModuleCheck]
    peft_messages: list[str] = field(default_factory=list)
    layers_called: int = 0
    layers_adapted: int = 0
    experts_routed: dict = field(default_factory=dict)  # experts module -> routed experts on probes
    reference: dict | None = None
    merged_max_abs: float | None = None
    seconds: float = 0.0
    load_error: str | None = None

    @property
    def counts(self) -> dict:
        c: dict[str, int] = {}
        for m in self.modules:
            c[m.status] = c.get(m.status, 0) + 1
        return dict(sorted(c.items()))

    @property
    def problems(self) -> list[ModuleCheck]:
        return [m for m in self.modules if m.problem]

    @property
    def ok(self) -> bool:
        file_mods = [m for m in self.modules if m.status != "zero-init"]
        return bool(file_mods) and not self.problems

    def summary(self) -> str:
        if self.load_error:
            return f"PEFT refused to load the adapter: {self.load_error[:300]}"
        file_mods = [m for m in self.modules if m.status not in ("zero-init",)]
        applied = sum(m.status in ("applied", "full-copy ok") for m in file_mods)
        eff = [m for m in file_mods if m.effect is not None]
        changed = sum(m.effect >= EFFECT_MIN for m in eff)
        s = (f"{applied}/{len(file_mods)} adapter modules applied; {changed}/{len(eff)} checked change their "
             f"module's output on probes")
        if self.problems:
            s += f"; {len(self.problems)} problem(s): " + ", ".join(sorted({m.status if m.status != 'applied' else
                                                                           ('not run' if m.runs is False else 'no effect')
                                                                           for m in self.problems}))
        zero = sum(m.status == "zero-init" for m in self.modules)
        if zero:
            s += f"; {zero} module(s) adapted by PEFT with no tensor in the file (zero-initialised)"
        return s

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "model": self.model, "ok": self.ok, "summary": self.summary(),
                "load_error": self.load_error,
                "counts": self.counts, "peft_messages": self.peft_messages, "layers_adapted": self.layers_adapted,
                "layers_called": self.layers_called, "experts_routed": self.experts_routed,
                "reference": self.reference, "merged_vs_unmerged_max_abs": self.merged_max_abs,
                "seconds": round(self.seconds, 2), "modules": [m.to_dict() for m in self.modules]}


# -- helpers ------------------------------------------------------------------------------------------------------

DTYPE_TOL = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}


def _load_model(path, dtype: str = "float32"):
    torch = need("torch", "regraft verify", "torch")
    need("transformers", "regraft verify", "torch")
    from transformers import AutoModelForCausalLM

    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise InputError(f"Cannot verify on '{path}': verify loads real weights and needs a local model folder "
                         "(config.json + *.safetensors).")
    from regraft.inspection.resolve import read_model_folder

    read_model_folder(p)  # config values and every safetensors header checked first: one clear error, not a traceback
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(str(p), dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"Cannot load the model '{path}' with transformers: {str(e).splitlines()[0][:300]}") from None
    model.eval()
    return model


from regraft.errors import PeftLoadError  # noqa: E402,F401  (defined in errors.py)


def _load_peft(model, adapter_dir) -> tuple[object, list[str]]:
    need("peft", "regraft verify", "torch")
    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pm = PeftModel.from_pretrained(model, str(adapter_dir))
        except (RuntimeError, ValueError, KeyError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise PeftLoadError(" ".join(lines[:3])[:600]) from None
    pm.eval()
    msgs = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in msgs and ("adapter" in text.lower() or "target" in text.lower() or "key" in text.lower()):
            msgs.append(text[:400])
    return pm, msgs


def probe_ids(model, n: int = 4, length: int = 32, seed: int = 0, tokenizer_dir=None):
    import torch

    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") else \
        model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g)


def expected_items(spec, num_experts: int | None, inter: int | None) -> dict:
    """module (per expert) -> item, from the adapter files (updates are formed one module at a time later)."""
    from regraft.port import relayout
    from regraft.port.items import items_from_spec

    items = items_from_spec(spec)
    if num_experts and any(it.kind == "fused_experts" for it in items):
        items = relayout.to_v4(items, num_experts, inter)
    return {it.module: it for it in items if it.kind in ("lora", "lora_embedding", "full_copy", "trainable_tokens")}


def expected_delta(it):
    """s*B@A in the model weight's orientation [out, in] (embeddings: [vocab, hidden])."""
    return it.delta().T if it.kind == "lora_embedding" else it.delta()


def _lora_layers(pm):
    from peft.tuners.lora import LoraLayer

    for name, mod in pm.named_modules():
        if isinstance(mod, LoraLayer) and ("default" in getattr(mod, "lora_A", {}) or
                                           "default" in getattr(mod, "lora_embedding_A", {})):
            yield name, mod


def iter_injected(pm, inter: int | None):
    """(module (per expert), delta [out, in]) for what PEFT built, one PEFT layer at a time (bounded memory)."""
    import torch

    with torch.no_grad():
        for name, mod in _lora_layers(pm):
            clean = name.removeprefix(_PREFIX)
            delta = mod.get_delta_weight("default").float()
            if type(mod).__name__ == "ParamWrapper":
                base = re.sub(r"(\.base_layer)+$", "", clean)
                param = mod.parameter_name
                if delta.dim() == 2:
                    yield f"{base}.{param}", delta
                    continue
                for e in range(delta.shape[0]):
                    if param == "gate_up_proj":
                        i = inter or delta.shape[1] // 2
                        yield f"{base}.{e}.gate_proj", delta[e, :i]
                        yield f"{base}.{e}.up_proj", delta[e, i:]
                    elif param == "down_proj":
                        yield f"{base}.{e}.down_proj", delta[e]
                    else:
                        yield f"{base}.{e}.{param}", delta[e]
            else:
                yield clean, delta
            del delta


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def _norm(it) -> float | None:
    from regraft.port.fixups import lora_norm

    if it.a is None or it.b is None:
        return float(it.full.float().norm()) if it.full is not None else None
    return lora_norm(it)


def _norms(expected: dict) -> dict:
    return {m: _norm(it) for m, it in expected.items()}


def _rel(a, b) -> float:
    nb = float(b.norm())
    return float((a - b).norm()) / nb if nb > 0 else (0.0 if float(a.norm()) == 0 else math.inf)


# -- verify ---------------------------------------------------------------------------------------------------------

def verify(adapter_dir, model_dir, reference_dir=None, n_probes: int = 4, seq_len: int = 32, seed: int = 0,
           merge: bool = False, progress=None, dtype: str = "float32") -> VerifyReport:
    import torch

    from regraft.inspection.adapter import read_adapter

    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    spec = read_adapter(adapter_dir)
    say("loading the model")
    if dtype not in DTYPE_TOL:
        raise InputError(f"Unknown --dtype '{dtype}'. Known: {', '.join(DTYPE_TOL)}.")
    tol = DTYPE_TOL[dtype]
    model = _load_model(model_dir, dtype)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_e = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
    inter = getattr(cfg, "moe_intermediate_size", None)
    expected = expected_items(spec, num_e, inter)
    say("loading the adapter with PEFT")
    try:
        pm, msgs = _load_peft(model, adapter_dir)
    except PeftLoadError as e:
        report = VerifyReport(str(adapter_dir), str(model_dir), [], [f"PEFT refused to load the adapter: {e}"])
        report.load_error = str(e)
        report.modules = [ModuleCheck(mod, "dropped", None, d,
                                      note="PEFT did not load the adapter") for mod, d in _norms(expected).items()]
        report.seconds = time.perf_counter() - t0
        return report
    report = VerifyReport(str(adapter_dir), str(model_dir), [], msgs)
    # 1. injected vs the files, one PEFT layer at a time
    seen: set[str] = set()
    for mod, got in iter_injected(pm, inter):
        it = expected.get(mod)
        if it is None or it.kind in ("full_copy", "trainable_tokens"):
            report.modules.append(ModuleCheck(mod, "zero-init" if float(got.norm()) == 0 else "not-in-adapter",
                                              None, float(got.norm()),
                                              note="PEFT adapted it but the adapter files have no tensor for it"))
            continue
        seen.add(mod)
        d = expected_delta(it)
        norm = float(d.norm())
        if tuple(got.shape) != tuple(d.shape):
            report.modules.append(ModuleCheck(mod, "mismatch", None, norm,
                                              note=f"shape {tuple(got.shape)} vs {tuple(d.shape)}"))
        else:
            err = _rel(got, d)
            report.modules.append(ModuleCheck(mod, "applied" if err <= tol else "mismatch", err, norm))
        del d
    for mod, it in expected.items():
        if it.kind in ("full_copy", "trainable_tokens"):
            report.modules.append(_check_full(pm, mod, it, tol))
        elif mod not in seen:
            report.modules.append(ModuleCheck(mod, "dropped", None, _norm(it),
                                              note="no adapted module of this name in the loaded model"))
    by_name = {m.module: m for m in report.modules}
    for mod, it in expected.items():  # DoRA: the magnitude vector must be the file's, not re-initialised
        if it.magnitude is None or mod not in by_name or by_name[mod].status != "applied":
            continue
        mc = by_name[mod]
        try:
            sub = pm.base_model.model.get_submodule(mod)
            mag = sub.lora_magnitude_vector["default"].weight.detach().float().reshape(-1)
            err = _rel(mag, it.magnitude.float().reshape(-1))
        except (AttributeError, KeyError):
            err = math.inf
        if err > tol:
            mc.status = "mismatch"
            mc.note = (mc.note + "; " if mc.note else "") + f"DoRA magnitude not the file's (rel. err {err:.2e})"
        else:
            mc.note = (mc.note + "; " if mc.note else "") + "DoRA magnitude loaded"
    order = {m: i for i, m in enumerate(expected)}
    report.modules.sort(key=lambda m: order.get(m.module, len(order)))
    # 2. runs + 3. effect
    say("running probes")
    layers = dict(_lora_layers(pm))
    report.layers_adapted = len(layers)
    outer = _outermost(list(layers))
    captured: dict[str, tuple] = {}
    called: set[str] = set()
    routed: dict[str, set] = {}
    hooks = []

    def pre_hook(name):
        def fn(mod, args, kwargs):
            called.add(name)
            if name not in captured:
                captured[name] = (tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs))
            if type(mod).__name__ == "ParamWrapper" and len(args) >= 2 and torch.is_tensor(args[1]):
                routed.setdefault(name, set()).update(int(x) for x in args[1].flatten().tolist())
        return fn

    for name in layers:
        hooks.append(layers[name].register_forward_pre_hook(pre_hook(name), with_kwargs=True))
    x = probe_ids(model, n_probes, seq_len, seed)
    try:
        with torch.no_grad():
            logits_on = pm(input_ids=x).logits
    finally:
        for h in hooks:
            h.remove()
    report.layers_called = len(called)
    effects: dict[str, float] = {}
    expert_effects: dict[str, float] = {}
    with torch.no_grad():
        for name in outer:
            if name not in captured:
                continue
            args, kwargs = captured[name]
            mod = layers[name]
            on = mod(*args, **kwargs)
            with pm.disable_adapter():
                off = mod(*args, **kwargs)
            effects[name] = _rel(on, off) if float(off.norm()) > 0 else float(on.norm() > 0)
            if type(mod).__name__ == "ParamWrapper" and num_e and len(args) >= 3:
                hs, idx, w = args[0], args[1], args[2]
                for e in range(num_e):
                    fi = torch.full_like(idx, e)
                    fw = torch.full_like(w, 1.0 / w.shape[-1])
                    on_e = mod(hs, fi, fw)
                    with pm.disable_adapter():
                        off_e = mod(hs, fi, fw)
                    expert_effects[f"{name}#{e}"] = _rel(on_e, off_e)
    clean = {n: (n.removeprefix(_PREFIX)) for n in layers}
    for m in report.modules:
        if m.status not in ("applied", "mismatch", "zero-init", "not-in-adapter"):
            continue
        owner = _owner(m.module, clean, outer)
        if owner is None:
            continue
        m.runs = any(n in called for n in layers if n == owner or n.startswith(owner + "."))
        em = re.search(r"\.experts\.(\d+)\.", m.module)
        if em and f"{owner}#{em.group(1)}" in expert_effects:
            m.effect = expert_effects[f"{owner}#{em.group(1)}"]
            m.note = (m.note + "; " if m.note else "") + "effect with the expert forced"
        elif owner in effects:
            m.effect = effects[owner]
        if m.runs is False and m.status == "applied":
            m.note = (m.note + "; " if m.note else "") + "not on the forward path of the probes"
    report.experts_routed = {clean[k]: len(v) for k, v in routed.items() if k in clean}
    if merge:
        say("merging")
        with torch.no_grad():
            merged = pm.merge_and_unload()
            report.merged_max_abs = float((merged(input_ids=x).logits - logits_on).abs().max())
    if reference_dir is not None:
        say("comparing with the reference model")
        report.reference = compare_reference(adapter_dir, reference_dir, model_dir, x,
                                             None if merge else pm, logits_on, dtype)
    report.seconds = time.perf_counter() - t0
    return report


def _owner(module: str, clean: dict, outer: list[str]) -> str | None:
    """The outermost PEFT layer (full name) that holds ``module`` (per-expert names map to the experts wrapper)."""
    base = re.sub(r"\.experts\.\d+\.\w+$", ".experts", module)
    for n in outer:
        c = clean[n]
        if c == module or c == base:
            return n
    return None


def _check_full(pm, mod: str, it, tol: float = TOL) -> ModuleCheck:
    import torch

    if it.kind != "full_copy":
        return ModuleCheck(mod, "not-checked", note=f"{it.kind}: value not compared")
    try:
        sub = pm.base_model.model.get_submodule(mod)
    except AttributeError:
        return ModuleCheck(mod, "dropped", note="no module of this name in the loaded model")
    w = None
    mts = getattr(sub, "modules_to_save", None)
    if mts is not None and "default" in mts:
        w = mts["default"].weight
    elif hasattr(sub, "base_layer") and hasattr(sub.base_layer, "weight"):
        w = sub.base_layer.weight
    if w is None:
        return ModuleCheck(mod, "dropped", note="PEFT did not wrap it (modules_to_save not honoured)")
    with torch.no_grad():
        err = _rel(w.float(), it.full.float()) if tuple(w.shape) == tuple(it.full.shape) else math.inf
    return ModuleCheck(mod, "full-copy ok" if err <= tol else "full-copy mismatch", err, float(it.full.float().norm()))


def _kl_agree(p_logits, q_logits) -> tuple[float, float]:
    import torch

    lp = torch.log_softmax(p_logits.float(), -1)
    lq = torch.log_softmax(q_logits.float(), -1)
    kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
    agree = float((p_logits.argmax(-1) == q_logits.argmax(-1)).float().mean())
    return agree, kl


def compare_reference(adapter_dir, source_dir, target_dir, x, target_pm=None, target_logits=None,
                      dtype: str = "float32") -> dict:
    """source+adapter vs target+adapter on the probes (plus both bases, for scale)."""
    import torch

    src = _load_model(source_dir, dtype)
    with torch.no_grad():
        src_base = src(input_ids=x).logits
    spm, _ = _load_peft(src, adapter_dir)
    with torch.no_grad():
        src_ad = spm(input_ids=x).logits
    tgt = _load_model(target_dir, dtype)
    with torch.no_grad():
        tgt_base = tgt(input_ids=x).logits
        if target_logits is None:
            tpm, _ = _load_peft(tgt, adapter_dir)
            target_logits = tpm(input_ids=x).logits
    a, kl = _kl_agree(src_ad, target_logits)
    ab, klb = _kl_agree(src_base, tgt_base)
    ae, kle = _kl_agree(src_ad, src_base)
    return {"source": str(source_dir), "top1_agreement": a, "kl": kl,
            "base_top1_agreement": ab, "base_kl": klb,
            "adapter_effect_on_source_kl": kle, "adapter_effect_on_source_top1_changed": 1 - ae,
            "probe_tokens": int(x.numel())}
