"""Golden cases for the LoRA rules (RG1xx-RG4xx): one folder per case, described in cases/README.md.

The adapter is synthesised at test time (tests/adapters/synth.py) from ``adapter:`` in case.yaml, then edited
(drop / set_shape / add tensors); ``check`` runs on SOURCE -> TARGET and expected.txt holds the LoRA area verdict
and every finding as 'CODE severity verdict: message' (plus the config area when the case has ``config:``).
REGRAFT_UPDATE_GOLDEN=1 rewrites expected.txt (review the diff before committing).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from tests.adapters.synth import peft_tensors, write_safetensors

DEFAULT_ADAPTER = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32,
                   "target_modules": ["q_proj", "v_proj"]}


def load_case(case: Path) -> dict:
    return yaml.safe_load((case / "case.yaml").read_text())


def _model(case: Path, name, models: dict | None = None):
    from regraft.inspection.resolve import resolve_model

    if name is None:
        return None
    if models and name in models:
        return resolve_model(models[name])
    p = case / name
    return resolve_model(p if p.is_dir() else name)


def _edit(tensors: dict, spec: dict) -> dict:
    """``drop`` (regexes) and ``set_shape`` (regex -> shape) of a case's adapter or model, on name -> (dtype, shape)."""
    for pat in spec.get("drop", []):
        tensors = {k: v for k, v in tensors.items() if not re.search(pat, k)}
    for pat, shape in (spec.get("set_shape") or {}).items():
        for k in [k for k in tensors if re.search(pat, k)]:
            tensors[k] = (tensors[k][0], tuple(shape))
    return tensors


def build_models(case: Path, specs: dict | None, out: Path) -> dict[str, Path]:
    """The case's ``models:``: local model folders synthesised into ``out`` (config.json + model.safetensors), in
    order, so that ``noise_of`` can name an earlier one. Returns name -> folder."""
    import numpy as np

    from regraft.inspection.resolve import read_model_folder
    from tests.adapters.synth import model_tensors
    from tests.factories import tiny_config

    folders: dict[str, Path] = {}
    values: dict[str, dict[str, np.ndarray]] = {}
    for name, m in (specs or {}).items():
        folder = out / name
        folder.mkdir(parents=True)
        cfg = tiny_config(m["from"], **(m.get("set") or {})) if m.get("from") else dict(m["config"])
        (folder / "config.json").write_text(json.dumps(cfg, indent=1))
        tensors = _edit(model_tensors(read_model_folder(folder).arch, "F32"), m)
        data = None
        if "seed" in m or "noise_of" in m:  # real values: N(0, 1), or another model's plus relative noise
            rng = np.random.default_rng(m.get("seed", 0))
            base = values.get(m.get("noise_of"), {})
            vals = {}
            for k, (_, shape) in tensors.items():
                v = rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
                if k in base and base[k].size == v.size:
                    v = base[k] + np.float32(m.get("noise", 0.02)) * v
                vals[k] = v
            values[name] = vals
            data = lambda k, n, vals=vals: vals[k].astype("<f4").tobytes()
        write_safetensors(folder / "model.safetensors", tensors, data)
        folders[name] = folder
    return folders


def build_adapter(case: Path, spec: dict, out: Path, default_on, models: dict | None = None) -> Path:
    """Synthesise the case's adapter into ``out`` (never inside the case folder)."""
    if spec.get("dir"):  # a hand-written adapter folder inside the case
        shutil.copytree(case / spec["dir"], out)
        return out
    cfg = {**DEFAULT_ADAPTER, **(spec.get("config") or {})}
    on = _model(case, spec["on"], models) if spec.get("on") else default_on
    cfg.setdefault("base_model_name_or_path", on.name)
    if cfg.get("base_model_name_or_path") == "~none":
        cfg["base_model_name_or_path"] = None
    base = str(cfg.get("base_model_name_or_path") or "")
    if base.startswith("@"):  # "@name": the folder of the case's synthesised model `name`
        cfg["base_model_name_or_path"] = str(models[base[1:]])
    tensors = _edit(peft_tensors(cfg, on.arch, spec.get("dtype", "BF16")), spec)
    for pat, repl in (spec.get("rename") or {}).items():  # e.g. a text-only CausalLM adapter for a wrapper model
        tensors = {re.sub(pat, repl, k): v for k, v in tensors.items()}
    for k, shape in (spec.get("add") or {}).items():
        tensors[k] = (spec.get("dtype", "BF16"), tuple(shape))
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    write_safetensors(out / "adapter_model.safetensors", tensors)
    for pat, what in (spec.get("poison") or {}).items():
        poison(out / "adapter_model.safetensors", pat, what)
    return out


_BITS = {("BF16", "nan"): b"\xc0\x7f", ("BF16", "inf"): b"\x80\x7f", ("F16", "nan"): b"\x00\x7e",
         ("F16", "inf"): b"\x00\x7c", ("F32", "nan"): b"\x00\x00\xc0\x7f", ("F32", "inf"): b"\x00\x00\x80\x7f"}


def poison(path: Path, pattern: str, what: str) -> None:
    """Write one NaN or Inf as the first value of every tensor matching ``pattern``."""
    from regraft.inspection.adapter_health import spans

    table, start = spans(path)
    with open(path, "r+b") as f:
        for name, (dt, _, b, _e) in table.items():
            if re.search(pattern, name):
                f.seek(start + b)
                f.write(_BITS[(dt, what)])


def run_case(case: Path, tmp: Path):
    from regraft.checks.engine import check
    from regraft.inspection.adapter import read_adapter

    spec = load_case(case)
    models = build_models(case, spec.get("models"), tmp / "models")
    source, target = _model(case, spec.get("source"), models), _model(case, spec["target"], models)
    adapter = None
    if spec.get("adapter") is not None:
        adapter = read_adapter(build_adapter(case, spec["adapter"], tmp / "adapter", source or target, models))
    options = {"drift": spec.get("drift", "never")}
    if spec.get("config"):
        options["config"] = str(case / spec["config"])
    rep = check(source, [target], adapter, spec.get("runtime", "peft"), options=options)
    return rep.targets[0]


def render(result) -> str:
    lines = []
    for name, area in result.areas.items():
        lines.append(f"{name}: {area.verdict.value}")
        for f in area.findings:
            lines.append(f"{f.code} {f.severity.value} {f.verdict.value if f.verdict else '-'}: {f.message}")
    return "\n".join(lines) + "\n"


def check_golden(case: Path, tmp: Path) -> str:
    from tests.configs.golden import compare_golden

    return compare_golden(case, render(run_case(case, tmp)).replace(str(tmp), "<tmp>").replace(str(case), "<case>"))
