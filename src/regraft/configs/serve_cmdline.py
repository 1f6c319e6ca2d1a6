"""The LoRA side of a serving command line or config: which adapters, which modules, which limits, which version.

Reads what ``check --config`` is given -- ``vllm serve ...``, ``python -m sglang.launch_server ...``,
``llama-server ...``, an Ollama Modelfile, or a vLLM/SGLang YAML/JSON settings file -- into :class:`LoraServing`:
the flags that decide whether a loaded adapter does anything (``--lora-target-modules``), is refused
(``--max-lora-rank``, a removed ``--lora-extra-vocab-size``, Ollama's ``ADAPTER``), or waits (``--max-loras``).

The runtime version is taken from the file when it says it: a container image tag (``vllm/vllm-openai:v0.28.0``,
``lmsysorg/sglang:v0.5.2``, ``ollama/ollama:0.34.1``), a pin (``vllm==0.28.0``), or a comment
``# vllm 0.28.0`` / ``# ollama version 0.34.1``. Unknown versions stay None: rules then name the version range
where the behaviour changes instead of guessing. Pure text parsing: no runtime is imported.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from regraft.errors import FileFormatError, InputError

_VERSION = re.compile(
    r"(?:vllm/vllm-openai:v?|lmsysorg/sglang:v?|ollama/ollama:v?|llama\.cpp:server-b|"
    r"\b(?:vllm|sglang|ollama)\s*(?:==|>=|@|version\s+|v(?=\d)|\s)\s*v?)(\d+\.\d+(?:\.\d+)?)", re.I)
_RUNTIME_OF = {"vllm": "vllm", "sglang": "sglang", "ollama": "ollama", "llama.cpp": "llama.cpp"}
_LIST_FLAGS = {"lora_target_modules", "lora_modules", "lora_paths", "lora", "lora_scaled"}


@dataclass
class LoraServing:
    path: Path
    runtime: str  # vllm | sglang | llama.cpp | ollama
    version: str | None = None
    enable_lora: bool | None = None
    target_modules: list[str] | None = None  # --lora-target-modules (vLLM / SGLang)
    max_lora_rank: int | None = None
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    extra_vocab_size: int | None = None  # --lora-extra-vocab-size (removed from vLLM)
    adapters: list[str] = field(default_factory=list)  # --lora-modules / --lora-paths / --lora / ADAPTER
    written: dict = field(default_factory=dict)  # field -> the flag or key as written

    def where(self, key: str) -> str:
        return self.written.get(key, key)

    @property
    def lora_requested(self) -> bool:
        return bool(self.enable_lora or self.adapters)


def version_tuple(v: str | None) -> tuple[int, ...] | None:
    if not v:
        return None
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return None


def read_lora_serving(path: str | Path) -> LoraServing | None:
    """The LoRA flags of a serving file, or None when the file is not a serving command / config (a
    generation_config.json, a recipe without LoRA flags...)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Config file '{path}' does not exist (or is not a file).")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{p}: not a UTF-8 text file; expected a command line, a Modelfile or a "
                              "YAML/JSON serving file.") from None
    return parse_lora_serving(text, p)


def parse_lora_serving(text: str, path: Path) -> LoraServing | None:
    from regraft.configs.readers import _looks_modelfile, _starts_with_command

    version = _version(text)
    if path.name.lower() == "modelfile" or path.name.lower().endswith(".modelfile") or _looks_modelfile(text):
        return _modelfile(text, path, version)
    if _starts_with_command(text):
        return _command(text, path, version)
    return _mapping(text, path, version)


def _version(text: str) -> str | None:
    m = _VERSION.search(text)
    return m.group(1) if m else None


def _modelfile(text: str, path: Path, version: str | None) -> LoraServing:
    out = LoraServing(path, "ollama", version)
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(None, 1)
        if parts and parts[0].upper() == "ADAPTER":
            out.adapters.append(parts[1].strip().strip('"') if len(parts) > 1 else "")
            out.written.setdefault("adapters", f"ADAPTER (line {i})")
    return out


def _argv(text: str, path: Path) -> list[str]:
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = [ln for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    from regraft.configs.readers import _COMMAND_RE

    line = next((ln for ln in lines if _COMMAND_RE.search(ln)), " ".join(lines))
    try:
        return shlex.split(line)
    except ValueError as e:
        raise FileFormatError(f"{path}: cannot split the command line ({e}). Check the quotes.") from None


def _command(text: str, path: Path, version: str | None) -> LoraServing:
    argv = _argv(text, path)
    head = " ".join(argv[:4])
    runtime = "vllm" if re.search(r"vllm\s+serve", head) else "sglang" if "sglang" in head else "llama.cpp"
    out = LoraServing(path, runtime, version)
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("--") and not (runtime == "llama.cpp" and tok.startswith("-")):
            continue
        flag, _, inline = tok.partition("=")
        key = flag.lstrip("-").replace("-", "_").lower()
        values = [inline] if inline else []
        if not inline:
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
                if key not in _LIST_FLAGS:
                    break
        _set(out, key, values, flag)
    return out


def _mapping(text: str, path: Path, version: str | None) -> LoraServing | None:
    from regraft.configs.readers import _load_mapping

    doc = _load_mapping(text, path)
    if not isinstance(doc, dict):
        return None
    keys = {str(k).lstrip("-").replace("-", "_").lower(): k for k in doc}
    sg = {"lora_paths", "max_loras_per_batch", "model_path", "context_length", "tp_size"}
    out = LoraServing(path, "sglang" if keys.keys() & sg else "vllm", version)
    for norm, raw in keys.items():
        v = doc[raw]
        values = [str(x) for x in v] if isinstance(v, list) else [] if v is True else [str(v)]
        if v is True or v is False:
            values = ["true" if v else "false"]
        _set(out, norm, values, str(raw))
    cmd = doc.get("command") or doc.get("args")
    if isinstance(cmd, str) and re.search(r"vllm\s+serve|sglang|llama-server", cmd):
        inner = _command(cmd, path, version)
        for k in ("enable_lora", "target_modules", "max_lora_rank", "max_loras", "max_cpu_loras", "extra_vocab_size"):
            if getattr(inner, k) is not None:
                setattr(out, k, getattr(inner, k))
                out.written[k] = "command: " + inner.where(k)
        out.adapters += inner.adapters
    if not out.lora_requested and out.target_modules is None and out.max_lora_rank is None:
        return out
    return out


def _int(values: list[str], flag: str, path: Path) -> int:
    try:
        return int(values[0])
    except (IndexError, ValueError):
        raise FileFormatError(f"{path}: '{flag}' needs an integer, got {' '.join(values) or 'nothing'}.") from None


def _set(out: LoraServing, key: str, values: list[str], flag: str) -> None:
    if key == "enable_lora":
        out.enable_lora = not values or values[0].lower() not in ("false", "0", "no")
        out.written["enable_lora"] = flag
    elif key == "lora_target_modules":
        mods = [m for v in values for m in re.split(r"[,\s]+", v.strip("[]")) if m]
        out.target_modules = [m.strip("'\"") for m in mods]
        out.written["target_modules"] = flag
    elif key == "max_lora_rank":
        out.max_lora_rank = _int(values, flag, out.path)
        out.written["max_lora_rank"] = flag
    elif key in ("max_loras", "max_loras_per_batch"):
        out.max_loras = _int(values, flag, out.path)
        out.written["max_loras"] = flag
    elif key == "max_cpu_loras":
        out.max_cpu_loras = _int(values, flag, out.path)
        out.written["max_cpu_loras"] = flag
    elif key == "lora_extra_vocab_size":
        out.extra_vocab_size = _int(values, flag, out.path)
        out.written["extra_vocab_size"] = flag
    elif key in ("lora_modules", "lora_paths", "lora", "lora_scaled"):
        out.adapters += [v for v in values if v]
        out.written.setdefault("adapters", flag)
