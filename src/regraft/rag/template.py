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

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox plus bounds on the operators that build huge values in one C call (where no alarm can
        interrupt): ``*`` and ``**`` and ``%``. Intercepted operators are also never constant-folded by the
        compiler (jinja2 skips folding them in a sandbox), so ``{{ 'a' * 10**10 }}`` no longer runs at compile time."""

        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call_binop(self, context, operator, left, right):
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(self, __context, __obj, *args, **kwargs):  # every call in a sandboxed template ('x'.ljust(n))
            _check_args(args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    plain_format = env.filters["format"]

    def bounded_format(value, *args, **kwargs):
        _check_binop("%", str(value), None)
        return plain_format(value, *args, **kwargs)

    env.filters["format"] = bounded_format
    for fname, f in list(env.filters.items()):  # center(n), indent(n), wordwrap(n)... with a computed n
        env.filters[fname] = _bounded_filter(f)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


_TEMPLATE_FILE = "<chat-template {}>"

MAX_TEMPLATE_NUMBER = 1_000_000  # chat templates count messages and tokens; nothing bigger has a use in one
MAX_BUILT = 10_000_000  # characters/items one operator may produce
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(?:\d{5,}|\*)|%[-+ #0]*\d*\.\d{5,}|\{[^{}]*:[^{}]*\d{5,}[^{}]*\}")


class _Bound(Exception):
    pass


def _size(x) -> int | None:
    return len(x) if isinstance(x, (str, list, tuple)) else None


def _check_binop(op: str, left, right) -> None:
    """Refuse an operation whose result would be huge, before it is computed."""
    nums = [v for v in (left, right) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if op == "**":
        if len(nums) == 2 and (abs(right) > 64 or abs(left) > MAX_TEMPLATE_NUMBER):
            raise _Bound(f"'{left!r:.20} ** {right!r:.20}' is too large for a chat template")
    elif op == "*":
        sizes = [_size(v) for v in (left, right)]
        seq = next((n for n in sizes if n is not None), None)
        if seq is not None and nums and seq * max(0, int(nums[0])) > MAX_BUILT:
            raise _Bound(f"repeating a {seq}-item value {nums[0]!r:.20} times is too large for a chat template")
        if len(nums) == 2 and abs(left) * abs(right) > 10**30:
            raise _Bound("a product too large for a chat template")
    elif op == "+":
        sizes = [_size(v) for v in (left, right)]
        if None not in sizes and sum(sizes) > MAX_BUILT:
            raise _Bound("a concatenation too large for a chat template")
    elif op == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
        raise _Bound(f"the format {left!r:.40} asks for a field width/precision too large for a chat template")


def _check_args(args, kwargs) -> None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_BUILT:
            raise _Bound(f"an argument of {v!r:.20} is too large for a chat template")


def _bounded_filter(f):
    import functools

    @functools.wraps(f)
    def g(*args, **kwargs):
        _check_args(args, kwargs)
        return f(*args, **kwargs)

    return g


def _static_check(env, source: str, name: str) -> None:
    """Before compiling: refuse integer constants past MAX_TEMPLATE_NUMBER (``center(999999999)``) and string
    constants with huge format widths (``'%999999999d'``, ``'{:999999999}'``); the compiler would fold them."""
    import jinja2
    from jinja2 import nodes

    try:
        tree = env.parse(source, name=name)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(name, e.lineno, f"syntax error: {e.message}") from None
    except RecursionError:
        raise TemplateError(name, None, "nested too deeply") from None
    for node in tree.find_all(nodes.Const):
        v = node.value
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > MAX_TEMPLATE_NUMBER:
            raise TemplateError(name, node.lineno, f"the number {v!r:.30} is larger than a chat template needs "
                                f"(at most {MAX_TEMPLATE_NUMBER:,}); refusing to compile it")
        if isinstance(v, str) and _WIDE_FORMAT.search(v):
            raise TemplateError(name, node.lineno, f"the format string {v!r:.40} asks for a field width/precision "
                                "too large for a chat template; refusing to compile it")


@lru_cache(maxsize=64)
def compile_template(source: str, name: str = "chat template"):
    import jinja2

    env = _env()
    _static_check(env, source, name)
    try:
        with _limits():  # the compiler folds constants: {{ 'a' * 10**10 }} is computed here
            code = env.compile(source, name=name, filename=_TEMPLATE_FILE.format(name))
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(name, e.lineno, f"syntax error: {e.message}") from None
    except (_RenderLimit, _Bound, MemoryError, RecursionError, OverflowError) as e:
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
