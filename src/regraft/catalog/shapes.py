"""A tiny, safe evaluator for the shape expressions in architecture files ("num_attention_heads*head_dim").

Only integer literals, config names, + - * // / and parentheses are allowed; anything else is an error.
A name missing from the config raises UnknownField, so a verdict that needs it can say "unknown".
"""

from __future__ import annotations

import ast
from functools import lru_cache


from regraft.errors import UnknownField  # noqa: E402,F401  (defined in errors.py)


_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Div: lambda a, b: a // b if a % b == 0 else a / b,
}


@lru_cache(maxsize=1024)
def _parse(expr: str) -> ast.expr:
    tree = ast.parse(expr, mode="eval").body
    for node in ast.walk(tree):
        if not isinstance(node, (ast.BinOp, ast.Name, ast.Constant, ast.Load, *(_OPS))):
            raise ValueError(f"shape expression {expr!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int):
            raise ValueError(f"shape expression {expr!r}: only integer literals are allowed")
    return tree


def evaluate(expr: str | int, values: dict) -> int:
    """Evaluate ``expr`` with names from ``values``; raise UnknownField for a missing or null name."""
    if isinstance(expr, int):
        return expr

    def ev(node: ast.expr):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            v = values.get(node.id)
            if v is None:
                raise UnknownField(node.id)
            return v
        return _OPS[type(node.op)](ev(node.left), ev(node.right))

    result = ev(_parse(expr))
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return result


def names(expr: str | int) -> set[str]:
    """The config names an expression reads."""
    if isinstance(expr, int):
        return set()
    return {n.id for n in ast.walk(_parse(expr)) if isinstance(n, ast.Name)}
