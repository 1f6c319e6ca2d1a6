"""OpenAI-style function calling: schemas from Python functions, a registry, and safe built-ins.

``tool_schema(fn)`` reads the signature, type hints and docstring of a plain Python function. The registry
runs a tool call (``{"function": {"name", "arguments": "<json>"}}``) and always returns a ``ToolResult`` -
bad JSON, unknown tools, wrong arguments and exceptions become ``ok=False`` with an error message (a signal
for the escalation policy), never a crash. There is no shell and no code execution: ``calculator`` parses
arithmetic with ``ast`` and evaluates a whitelist of nodes with bounded sizes.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import operator
import typing
from dataclasses import dataclass
from typing import Callable

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _json_type(tp) -> dict:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _json_type(args[0]) if len(args) == 1 else {}
    if origin is typing.Literal:
        vals = list(typing.get_args(tp))
        return {"type": _JSON_TYPES.get(type(vals[0]), "string"), "enum": vals}
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return {"type": "array", "items": _json_type(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object"}
    return {"type": _JSON_TYPES[tp]} if tp in _JSON_TYPES else {}


def _param_docs(doc: str) -> dict[str, str]:
    """Descriptions from 'name: text' lines (Google 'Args:' style or plain)."""
    out = {}
    for line in doc.splitlines():
        s = line.strip()
        if ":" in s and not s.endswith(":"):
            name, _, text = s.partition(":")
            name = name.split("(")[0].strip()
            if name.isidentifier():
                out[name] = text.strip()
    return out


def tool_schema(fn: Callable, name: str | None = None) -> dict:
    """OpenAI tool schema ``{"type": "function", "function": {name, description, parameters}}`` for ``fn``."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    doc = inspect.getdoc(fn) or ""
    pdocs = _param_docs(doc)
    props, required = {}, []
    for pname, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described as a JSON schema")
        schema = dict(_json_type(hints.get(pname, str)))
        if pname in pdocs:
            schema["description"] = pdocs[pname]
        if p.default is inspect.Parameter.empty:
            required.append(pname)
        else:
            schema["default"] = p.default
        props[pname] = schema
    summary = doc.split("\n\n")[0].strip()
    return {
        "type": "function",
        "function": {
            "name": name or fn.__name__,
            "description": summary,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


@dataclass
class ToolResult:
    name: str
    ok: bool
    content: str
    error: str | None = None


class ToolRegistry:
    def __init__(self, max_result_chars: int = 4000):
        self._fns: dict[str, Callable] = {}
        self._schemas: dict[str, dict] = {}
        self.max_result_chars = max_result_chars

    def register(self, fn: Callable, name: str | None = None) -> Callable:
        schema = tool_schema(fn, name)
        n = schema["function"]["name"]
        self._fns[n] = fn
        self._schemas[n] = schema
        return fn

    def names(self) -> list[str]:
        return list(self._fns)

    def schemas(self) -> list[dict]:
        return list(self._schemas.values())

    def __len__(self):
        return len(self._fns)

    def call(self, tool_call: dict) -> ToolResult:
        fn_part = (tool_call or {}).get("function") or {}
        name = fn_part.get("name") or "?"
        if name not in self._fns:
            return ToolResult(name, False, "", f"unknown tool {name!r}; available: {', '.join(self._fns) or 'none'}")
        raw = fn_part.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as e:
            return ToolResult(name, False, "", f"arguments are not JSON ({e.msg})")
        if not isinstance(args, dict):
            return ToolResult(name, False, "", "arguments must be a JSON object")
        sig = inspect.signature(self._fns[name])
        try:
            bound = sig.bind(**args)
        except TypeError as e:
            return ToolResult(name, False, "", f"bad arguments: {e}")
        try:
            out = self._fns[name](*bound.args, **bound.kwargs)
        except Exception as e:  # a tool failure is a signal, not a crash
            return ToolResult(name, False, "", f"{type(e).__name__}: {e}")
        text = out if isinstance(out, str) else json.dumps(out, default=str)
        return ToolResult(name, True, text[: self.max_result_chars])


# -- calculator ------------------------------------------------------------------------------------------

from regraft.errors import CalculatorError  # noqa: E402,F401  (defined in errors.py)


_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UN = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log,
          "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil}
_CONSTS = {"pi": math.pi, "e": math.e}
MAX_EXPR_CHARS = 500
MAX_ABS = 1e300


def _check(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CalculatorError("only numbers are allowed")
    if isinstance(v, int) and v.bit_length() > 4096:
        raise CalculatorError("number too large")
    if isinstance(v, float) and (math.isnan(v) or abs(v) > MAX_ABS):
        raise CalculatorError("result out of range")
    return v


def _eval(node, depth=0):
    if depth > 50:
        raise CalculatorError("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        return _check(node.value)
    if isinstance(node, ast.Name):
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
        return _check(_UN[type(node.op)](_eval(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            if abs(b) > 1000 or (abs(a) > 1 and abs(b) * math.log2(abs(a) + 1) > 4096):
                raise CalculatorError("exponent too large")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise CalculatorError("division by zero")
        if isinstance(node.op, ast.Mult) and isinstance(a, int) and isinstance(b, int):
            if a.bit_length() + b.bit_length() > 4096:
                raise CalculatorError("number too large")
        try:
            return _check(_BIN[type(node.op)](a, b))
        except (OverflowError, ValueError, ZeroDivisionError) as e:
            raise CalculatorError(str(e)) from e
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        if len(node.args) > 8:
            raise CalculatorError("too many arguments")
        args = [_eval(a, depth + 1) for a in node.args]
        try:
            return _check(_FUNCS[node.func.id](*args))
        except (OverflowError, ValueError, TypeError) as e:
            raise CalculatorError(f"{node.func.id}: {e}") from e
    raise CalculatorError(f"not allowed in arithmetic: {type(node).__name__}")


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic safely (numbers, + - * / // % **, parentheses, sqrt/abs/round/min/max/log/exp/...)."""
    if not isinstance(expression, str):
        raise CalculatorError("expression must be a string")
    if len(expression) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    expr = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"not an arithmetic expression: {e.msg}") from e
    return _eval(tree)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result.

    expression: arithmetic such as "(17 + 25) * 3 / 7" or "sqrt(2) ** 2"; no variables or code
    """
    v = calculate(expression)
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    return str(v)


def make_retrieve(retriever: Callable[[str, int], list]) -> Callable:
    """The `retrieve` tool bound to a store (``retriever(query, k) -> list[Hit]``)."""

    def retrieve(query: str, k: int = 4) -> str:
        """Search the knowledge base and return the most relevant passages with their source files.

        query: what to look for
        k: how many passages (1-10)
        """
        k = max(1, min(10, int(k)))
        hits = retriever(query, k)
        return json.dumps([{"source": h.path, "score": round(h.score, 3), "text": h.text} for h in hits])

    return retrieve


def default_tools(retriever: Callable | None = None) -> ToolRegistry:
    reg = ToolRegistry()
    if retriever is not None:
        reg.register(make_retrieve(retriever))
    reg.register(calculator)
    return reg


def load_user_tools(reg: ToolRegistry, spec: str) -> list[str]:
    """Register every public function of a Python module file or dotted module (``--tools my_tools.py``)."""
    import importlib
    import importlib.util
    from pathlib import Path

    from regraft.errors import InputError

    if spec.endswith(".py"):
        p = Path(spec)
        if not p.is_file():
            raise InputError(f"tools file {spec} does not exist; expected a .py file defining plain functions")
        s = importlib.util.spec_from_file_location(f"regraft_user_tools_{p.stem}", p)
        mod = importlib.util.module_from_spec(s)
        try:
            s.loader.exec_module(mod)  # the user's own code, named by the user on the command line
        except Exception as e:
            raise InputError(f"tools file {spec} failed to import: {type(e).__name__}: {e}") from e
    else:
        try:
            mod = importlib.import_module(spec)
        except ImportError as e:
            raise InputError(f"tools module {spec!r} cannot be imported ({e}); expected a .py path or module") from e
    names = []
    for name, fn in vars(mod).items():
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != mod.__name__:
            continue
        try:
            reg.register(fn)
        except (TypeError, KeyError) as e:
            raise InputError(f"tools {spec}: function {name} cannot be a tool ({e}); use typed keyword parameters") from e
        names.append(name)
    return names

