"""Human-readable output shows what a file says, as written: rich markup (``[INST] ... [/INST]``) neither crashes
(MarkupError) nor vanishes, and no terminal control sequence from a file (ESC/OSC/CSI, CR, C1, bidi overrides)
reaches the terminal raw. JSON stays exact. One function does it: ``regraft.escape``."""

from __future__ import annotations

import io
import os
import json
import re

import pytest
from hypothesis import given, settings

from regraft.escape import markup, safe
from tests.hostile._files import adapter_folder
from tests.hostile.strategies import hostile_text

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@given(hostile_text())
def test_safe_leaves_nothing_a_terminal_acts_on(text):
    assert not RAW.search(safe(text))
    clean = RAW.sub("", text)
    assert safe(clean) == clean.replace("\ufeff", "\\ufeff").replace("\u200b", "\\u200b") or RAW.search(clean)


@given(hostile_text())
def test_markup_shows_the_text_as_written(text):
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=100_000, color_system=None, highlight=False, emoji=False).print(
        f"[bold]{markup(text)}[/bold]")
    assert buf.getvalue().rstrip() == safe(text).rstrip()


def _run(argv, capsys, monkeypatch):
    from regraft.cli.main import main

    monkeypatch.setenv("COLUMNS", "100000")
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


MISTRAL_RAG = ("model: mistralai/Mistral-7B-Instruct-v0.3\nembedding: {model: BAAI/bge-m3}\n"
               "chunking: {size: 256, unit: tokens}\nretrieval: {top_k: 4}\nprompt:\n"
               "  user_template: \"[INST] Context:\\n{context}\\n\\nQuestion: {question} [/INST]\"\n"
               "generation: {answer_tokens: 512, stop: [\"[/INST]\", \"</s>\"]}\n")


def test_plain_mistral_rag_setup(tmp_path, capsys, monkeypatch):
    """The issue's case: every Llama/Mistral RAG prompt crashed `check` with a rich MarkupError."""
    rag = tmp_path / "rag.yaml"
    rag.write_text(MISTRAL_RAG)
    code, out, err = _run(["check", "mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen3-8B", "--rag", rag],
                          capsys, monkeypatch)
    assert code in (0, 1), err
    assert "'[/INST]'" in out and "[INST]" in out, out  # shown, not eaten as a style tag


@settings(max_examples=25 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings().max_examples)
@given(name=hostile_text(), key=hostile_text())
def test_hostile_names_never_reach_the_terminal(tmp_path_factory, capsys, monkeypatch, name, key):
    """base_model_name_or_path, a config key, a stop string: shown escaped in text, exact in JSON."""
    d = tmp_path_factory.mktemp("esc")
    a = adapter_folder(d / "adapter")
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = name
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    code, out, err = _run(["inspect", a], capsys, monkeypatch)
    assert "Traceback" not in err and code in (0, 2), err
    assert not RAW.search(out + err.replace("\n", "")), (out, err)
    if code == 0 and name.strip() and "\n" not in name:
        assert safe(name).strip() in out, (safe(name), out)
        code, out, _ = _run(["inspect", a, "--format", "json"], capsys, monkeypatch)
        assert json.loads(out).get("base_model_name_or_path", name) == name
    serve = d / "serve.yaml"
    serve.write_text(json.dumps({"model": "Qwen/Qwen3-8B", key or "k": 1, "max-model-len": 4096}))
    code, out, err = _run(["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--config", serve], capsys, monkeypatch)
    assert "Traceback" not in err and code in (0, 1, 2), err
    assert not RAW.search(out + err.replace("\n", "")), (out, err)


@pytest.mark.parametrize("stop", ["[/INST]", "\x1b]0;pwned\x07", "[bold]x[/bold]"])
def test_hostile_rag_strings(tmp_path, capsys, monkeypatch, stop):
    rag = tmp_path / "rag.yaml"
    rag.write_text(MISTRAL_RAG.replace('"</s>"', json.dumps(stop)))
    code, out, err = _run(["check", "mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen3-8B", "--rag", rag],
                          capsys, monkeypatch)
    assert code in (0, 1), err
    assert not RAW.search(out + err.replace("\n", "")), out
