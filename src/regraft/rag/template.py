"""Chat-template rendering exactly as transformers does it, in jinja2's immutable sandbox.

Same environment as ``transformers.utils.chat_template_utils._compile_jinja_template`` (trim_blocks, lstrip_blocks,
loopcontrols, the ``{% generation %}`` tag, ``raise_exception``, ``strftime_now``, ``tojson`` without HTML
escaping) and the same inputs as ``apply_chat_template``: the special tokens (bos_token, eos_token, ...) plus the
caller's kwargs (e.g. ``enable_thinking``). A template that fails to compile or render raises
:class:`TemplateError` naming the template and the line.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources

from regraft.errors import InputError


from regraft.errors import TemplateError  # noqa: E402,F401  (defined in errors.py)


@lru_cache(maxsize=1)
def _env():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):  # {% generation %}...{% endgeneration %}: rendered as is
        tags = {"generation"}  # noqa: RUF012 - jinja2 Extension API

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


_TEMPLATE_FILE = "<chat-template {}>"


@lru_cache(maxsize=64)
def compile_template(source: str, name: str = "chat template"):
    import jinja2

    env = _env()
    try:
        with _limits():  # the compiler folds constants: {{ 'a' * 10**10 }} is computed here
            code = env.compile(source, name=name, filename=_TEMPLATE_FILE.format(name))
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(name, e.lineno, f"syntax error: {e.message}") from None
    except (_RenderLimit, MemoryError, RecursionError, OverflowError) as e:
        raise TemplateError(name, None, f"failed to compile ({type(e).__name__}: {e})") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _line_of(exc: BaseException, name: str) -> int | None:
    line = getattr(exc, "lineno", None)
    if line:
        return line
    fname = _TEMPLATE_FILE.format(name)
    found = None
    for fr in traceback.extract_tb(exc.__traceback__):
        if fr.filename == fname:
            found = fr.lineno
    return found


RENDER_SECONDS = 5.0  # a chat template renders in milliseconds; a hostile one may loop or allocate forever
RENDER_BYTES = 2 << 30  # extra address space a render may take


class _RenderLimit(Exception):
    pass


@contextmanager
def _limits(seconds: float = RENDER_SECONDS, extra: int = RENDER_BYTES):
    """Bound a render's time (SIGALRM) and memory (RLIMIT_AS) when running on the main thread (the CLI);
    the sandbox alone stops attribute escapes but not ``{{ 'a' * 10**10 }}`` or nested loops."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        import resource

        old_as = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft = vm + extra if old_as[0] == resource.RLIM_INFINITY else min(old_as[0], vm + extra)
        resource.setrlimit(resource.RLIMIT_AS, (soft, old_as[1]))
    except (ImportError, OSError, ValueError, AttributeError):
        old_as = None

    def alarm(signum, frame):
        raise _RenderLimit(f"rendering took more than {seconds:g} s")

    t0 = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, alarm)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer > 0:  # give a caller's own alarm back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - t0), 1e-3))
        if old_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, old_as)


def render(source: str, messages: list[dict], *, name: str = "chat template", add_generation_prompt: bool = True,
           tools: list | None = None, documents: list | None = None, special_tokens: dict | None = None,
           **kwargs) -> str:
    """Render like ``tokenizer.apply_chat_template(messages, tokenize=False, ...)``."""
    template = compile_template(source, name)
    variables = dict(special_tokens or {})
    variables.update(kwargs)
    variables.update(messages=[dict(m) for m in messages], tools=tools, documents=documents,
                     add_generation_prompt=add_generation_prompt)
    try:
        with _limits():
            return template.render(**variables)
    except Exception as e:  # noqa: BLE001 - any template failure becomes one clear error
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        raise TemplateError(name, _line_of(e, name), f"failed to render ({type(e).__name__}: {msg})") from None


# --- bundled templates -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundledTemplate:
    name: str  # file name
    source: str
    verified_for: str
    protocol: str
    note: str = ""


@lru_cache(maxsize=1)
def _index() -> dict:
    return json.loads(resources.files("regraft.rag").joinpath("templates", "index.json").read_text(encoding="utf-8"))


def bundled_template(model_name: str) -> BundledTemplate | None:
    """The bundled official template for a Hub model id, or None."""
    for entry in _index()["templates"]:
        if re.search(entry["models"], model_name):
            text = resources.files("regraft.rag").joinpath("templates", entry["file"]).read_text(encoding="utf-8")
            return BundledTemplate(entry["file"], text, entry["verified_for"], entry["protocol"], entry.get("note", ""))
    return None


def bundled_template_files() -> list[str]:
    return [e["file"] for e in _index()["templates"]]


def template_for(spec) -> tuple[str | None, str]:
    """(template source, where it came from) for a ModelSpec: its own template first, then a bundled one."""
    if spec.chat_template:
        return spec.chat_template, f"chat template of {spec.path or spec.name}"
    b = bundled_template(spec.name)
    if b is not None:
        return b.source, f"bundled {b.name} (official template of {b.verified_for})"
    return None, ""


# Special tokens the template sees (transformers passes tokenizer.special_tokens_map).
FAMILY_SPECIAL_TOKENS = {
    "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen2-base": {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "qwen3_5": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-v3": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}


def special_tokens_for(spec, family: str | None) -> dict:
    tc = spec.tokenizer_config or {}
    out = {}
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = tc.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            out[k] = v
    if out:
        return out
    return dict(FAMILY_SPECIAL_TOKENS.get(family or "", {}))
