import json
from typing import Literal, Optional

import pytest
from hypothesis import given, settings, strategies as st

from regraft.errors import InputError
from regraft.hybrid.tools import (CalculatorError, ToolRegistry, calculate, calculator, default_tools,
                                   load_user_tools, tool_schema)


@pytest.mark.parametrize("expr,value", [
    ("1+2*3", 7), ("(17 + 25) * 3 / 7", 18), ("2**10", 1024), ("2^10", 1024), ("sqrt(16)", 4), ("-3 % 5", 2),
    ("max(1, 7, 3)", 7), ("round(2.567, 2)", 2.57), ("pi > 3", None), ("7 // 2", 3), ("1e3 + 1", 1001),
])
def test_calculator_arithmetic(expr, value):
    if value is None:
        with pytest.raises(CalculatorError):
            calculate(expr)
    else:
        assert float(calculator(expr)) == pytest.approx(value)


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "open('/etc/passwd').read()", "().__class__.__mro__", "exec('1')",
    "eval('1')", "lambda: 1", "[1] * 10", "x", "a.b", "'a' * 3", "9**9**9", "10**100000", "2**4097 * 1",
    "(1 if 1 else 2)", "{}", "1/0", "f'{1}'", "globals()", "sqrt(-1)", "1" * 600,
])
def test_calculator_rejects_code_and_huge_work(expr):
    with pytest.raises(CalculatorError):
        calculate(expr)


@settings(max_examples=200, deadline=1000)
@given(st.text(max_size=60))
def test_calculator_never_raises_anything_else(expr):
    try:
        calculate(expr)
    except CalculatorError:
        pass


def test_schema_from_function():
    def lookup(city: str, unit: Literal["c", "f"] = "c", days: int = 1, note: Optional[str] = None) -> str:
        """Weather for a city.

        city: the city name
        days: how many days ahead
        """
        return city

    s = tool_schema(lookup)["function"]
    assert s["name"] == "lookup" and s["description"] == "Weather for a city."
    props = s["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "the city name"}
    assert props["unit"]["enum"] == ["c", "f"] and props["unit"]["default"] == "c"
    assert props["days"]["type"] == "integer" and props["days"]["description"] == "how many days ahead"
    assert props["note"]["type"] == "string"
    assert s["parameters"]["required"] == ["city"]


def test_registry_turns_every_failure_into_a_result():
    reg = default_tools()
    call = lambda name, args: reg.call({"function": {"name": name, "arguments": args}})  # noqa: E731
    assert call("calculator", json.dumps({"expression": "6*7"})).content == "42"
    assert not call("nope", "{}").ok and "unknown tool" in call("nope", "{}").error
    assert "not JSON" in call("calculator", "{bad").error
    assert "bad arguments" in call("calculator", json.dumps({"expr": "1"})).error
    r = call("calculator", json.dumps({"expression": "1/0"}))
    assert not r.ok and "division by zero" in r.error


def test_retrieve_tool_uses_the_store(store, embedder):
    from regraft.hybrid.store import open_store

    s = open_store(store)
    reg = default_tools(lambda q, k: s.search(embedder.embed([q])[0], k))
    assert reg.names() == ["retrieve", "calculator"]
    out = json.loads(reg.call({"function": {"name": "retrieve", "arguments": '{"query": "capital of France", "k": 1}'}}).content)
    assert out[0]["source"] == "france.md" and "Paris" in out[0]["text"]


def test_user_tools_from_file(tmp_path):
    f = tmp_path / "mytools.py"
    f.write_text("def shout(text: str) -> str:\n    '''Upper-case text.'''\n    return text.upper()\n\n"
                 "def _private():\n    pass\n")
    reg = ToolRegistry()
    assert load_user_tools(reg, str(f)) == ["shout"]
    assert reg.call({"function": {"name": "shout", "arguments": '{"text": "hi"}'}}).content == "HI"
    with pytest.raises(InputError, match="does not exist"):
        load_user_tools(reg, str(tmp_path / "none.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(InputError, match="failed to import: RuntimeError: boom"):
        load_user_tools(reg, str(bad))
