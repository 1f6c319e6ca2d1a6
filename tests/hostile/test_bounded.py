"""Every reader bounded in time and linear in its input: chat templates that fold huge constants at compile time
or build huge values in one C call (where an alarm cannot interrupt) are refused before they run; a 100k-entry
layers_to_transform and a Modelfile with an unclosed multi-MB TEMPLATE are read in well under 10 s."""

from __future__ import annotations

import json
import os
import time

from hypothesis import given, settings

from tests.hostile._files import adapter_folder
from tests.hostile.strategies import heavy_templates


@settings(max_examples=60 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings().max_examples)
@given(heavy_templates())
def test_heavy_templates_end_quickly(source):
    from regraft.rag.template import TemplateError, render

    t0 = time.perf_counter()
    try:
        out = render(source, [{"role": "user", "content": "hi"}])
    except TemplateError:
        out = None
    took = time.perf_counter() - t0
    assert took < 3, f"{source!r}: {took:.1f} s"
    assert out is None or len(out) <= 20_000_000, source


def _timed(argv, capsys):
    from regraft.cli.main import main

    t0 = time.perf_counter()
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err, time.perf_counter() - t0


def test_100k_layers_to_transform_is_linear(tmp_path, capsys):
    a = adapter_folder(tmp_path / "a")
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["layers_to_transform"] = list(range(100_000))
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    for argv in (["inspect", a], ["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--adapter", a]):
        code, err, took = _timed(argv, capsys)
        assert code in (0, 1, 2) and "Traceback" not in err and took < 10, (argv, took, err)


def test_unclosed_modelfile_template_is_linear(tmp_path, capsys):
    mf = tmp_path / "Modelfile"
    mf.write_text('FROM qwen3:8b\nTEMPLATE """' + "{{ .Prompt }} x\n" * 250_000)  # ~4 MB, never closed
    for argv in (["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-4B", "--config", mf, "--runtime", "ollama"],
                 ["port", "config", mf, "--to", "Qwen/Qwen3-4B", "--runtime", "vllm"]):
        code, err, took = _timed(argv, capsys)
        assert code in (0, 1, 2) and "Traceback" not in err and took < 10, (argv, took, err)
