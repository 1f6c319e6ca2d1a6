"""One parser for every number regraft reads from a user (CLI flags, adapter_config.json, serving configs, RAG
setups, policies): a plain bounded decimal or it is refused with one line naming where it came from.

Refused: bools; strings that are not plain ASCII decimals ('²', '١٢', '--5', '1_000', ' 5', 'abc', '0x10');
more than ``MAX_DIGITS`` digits (before Python's own 4300-digit limit can raise); NaN and infinities; floats
where an integer is wanted (4.5; 4.0 is accepted as 4); values outside [lo, hi].
"""

from __future__ import annotations

import math
import re

from regraft.errors import FileFormatError, NumberError  # noqa: F401 (re-exported)

MAX_DIGITS = 30
_INT = re.compile(r"[+-]?[0-9]{1,%d}" % MAX_DIGITS)
_DEC = re.compile(r"[+-]?(?:[0-9]{1,%d}(?:\.[0-9]{0,%d})?|\.[0-9]{1,%d})(?:[eE][+-]?[0-9]{1,3})?"
                  % (MAX_DIGITS, MAX_DIGITS, MAX_DIGITS))


def shown(value, n: int = 60) -> str:
    """A short repr that never raises (ints past the digit limit, deep structures)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= n else text[: n - 3] + "..."


def _range(lo, hi) -> str:
    lo, hi = (f"{x:g}" if isinstance(x, float) else x for x in (lo, hi))
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def parse_int(value, what: str, lo: int | None = None, hi: int | None = None, *, strings: bool = True) -> int:
    """``value`` (int, integral float, or a decimal string when ``strings``) as an int in [lo, hi]."""
    def bad(why: str = "") -> NumberError:
        return NumberError(f"{what} must be an integer{_range(lo, hi)}, got {shown(value)}{why}.")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, int):
        if value.bit_length() > 100:
            raise bad()
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise bad()
        n = int(value)
    elif isinstance(value, str) and strings:
        if not _INT.fullmatch(value):
            raise bad(" (expected plain decimal digits)")
        n = int(value)
    else:
        raise bad(f" ({type(value).__name__})")
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise bad()
    return n


def parse_float(value, what: str, lo: float | None = None, hi: float | None = None, *,
                strings: bool = True) -> float:
    """``value`` (int, float, or a decimal string when ``strings``) as a finite float in [lo, hi]."""
    def bad(why: str = "") -> NumberError:
        return NumberError(f"{what} must be a finite number{_range(lo, hi)}, got {shown(value)}{why}.")

    if isinstance(value, bool):
        raise bad()
    if isinstance(value, int):
        if value.bit_length() > 1000:
            raise bad()
        x = float(value)
    elif isinstance(value, float):
        x = value
    elif isinstance(value, str) and strings:
        if not _DEC.fullmatch(value):
            raise bad(" (expected a plain decimal such as 0.7)")
        x = float(value)
    else:
        raise bad(f" ({type(value).__name__})")
    if not math.isfinite(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        raise bad()
    return x


def _flag(parse, name: str, lo, hi):
    """An argparse ``type=`` built on ``parse`` (argparse shows the message as the flag's error)."""
    import argparse

    def conv(text: str):
        try:
            return parse(text, "the value", lo, hi)
        except NumberError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    conv.__name__ = name
    return conv


def int_flag(lo: int | None = None, hi: int | None = None):
    """An argparse ``type=`` for integer flags."""
    return _flag(parse_int, "integer", lo, hi)


def float_flag(lo: float | None = None, hi: float | None = None):
    """An argparse ``type=`` for number flags."""
    return _flag(parse_float, "number", lo, hi)
