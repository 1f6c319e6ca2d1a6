"""One escaping function for everything regraft shows a human: text from users' files (tensor names,
``base_model_name_or_path``, config keys, RAG prompts like ``[INST] ... [/INST]``) is shown as written, never
interpreted by the terminal (ESC/OSC/CSI sequences, carriage returns, other control and bidi-override characters,
lone surrogates) nor by rich (``[...]`` is markup to rich). JSON output does not go through here: it stays exact
(``json.dumps`` already escapes every control character)."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL and C1 controls, zero-width and bidi controls, BOM, lone surrogates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def _show(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text) -> str:
    """``text`` with every character a terminal would act on shown as a visible escape (``\\x1b``)."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_show, s) if _UNSAFE.search(s) else s


def safe_line(text) -> str:
    """``safe`` on one line (newlines too become visible escapes): for error messages and table cells."""
    return safe(text).replace("\n", "\\n")


_BRACKET = re.compile(r"(\\*)\[")
_TAG = re.compile(r"\[[a-z#/@][^[]*?]")  # what rich parses as a tag (rich.markup.RE_TAGS without the escapes)
_TRAILING = re.compile(r"(\\+)$")


def markup(text) -> str:
    """``safe(text)`` for interpolation into a rich markup string, rendered back exactly: a tag-shaped ``[...]``
    gets rich's escape (its backslashes doubled), any other ``[`` one backslash (rich turns ``\\[`` into ``[`` in
    plain text), and backslashes at the end are doubled (the template's closing tag follows and halves them)."""
    s = safe(text)

    def one(m: re.Match) -> str:
        k = m.group(1)
        return (k * 2 if _TAG.match(s, m.end() - 1) else k) + "\\["

    return _TRAILING.sub(lambda m: m.group(1) * 2, _BRACKET.sub(one, s))
