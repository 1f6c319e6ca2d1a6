"""Chat-template rendering: equal to transformers' apply_chat_template on every bundled template, clear errors."""

from __future__ import annotations

import pytest

from regraft.rag.template import TemplateError, bundled_template_files, render

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is the capital of France?"}],
    "system+user": [{"role": "system", "content": "Answer from the context only."},
                    {"role": "user", "content": "Context:\nParis is the capital.\n\nQuestion: capital?"}],
    "multi-turn": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Sum 2 and 3 → ?"}],
    "reasoning-history": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
                          {"role": "user", "content": "and 3+3?"}],
    "unicode": [{"role": "user", "content": "東京 und Zürich: naïve résumé 🙂 {braces} \"quotes\""}],
}
KWARGS = [{}, {"enable_thinking": False}, {"enable_thinking": True}]
GEN = [True, False]


def _files():
    from importlib import resources

    return {f: resources.files("regraft.rag").joinpath("templates", f).read_text(encoding="utf-8")
            for f in bundled_template_files()}


def _cases():
    for f in bundled_template_files():
        for conv in CONVERSATIONS:
            for kw in KWARGS:
                for gen in GEN:
                    yield f, conv, kw, gen


CASES = list(_cases())


def test_renders_equal_apply_chat_template(hf_tokenizer):
    """Every bundled template x 5 conversations x 3 kwargs x 2 add_generation_prompt, against transformers."""
    files = _files()
    special = hf_tokenizer.special_tokens_map
    compared = same = 0
    both_fail = 0
    diffs = []
    for f, conv, kw, gen in CASES:
        msgs = CONVERSATIONS[conv]
        try:
            theirs = hf_tokenizer.apply_chat_template(msgs, chat_template=files[f], tokenize=False,
                                                      add_generation_prompt=gen, **kw)
        except Exception:  # noqa: BLE001 - the template itself refuses (e.g. Gemma has no system role)
            with pytest.raises(TemplateError) as ei:
                render(files[f], msgs, name=f, add_generation_prompt=gen, special_tokens=special, **kw)
            assert f in str(ei.value) and "line" in str(ei.value), str(ei.value)
            both_fail += 1
            continue
        ours = render(files[f], msgs, name=f, add_generation_prompt=gen, special_tokens=special, **kw)
        compared += 1
        if ours == theirs:
            same += 1
        else:
            diffs.append((f, conv, kw, gen))
    assert not diffs, diffs[:5]
    assert compared == same and compared >= 300, (compared, both_fail)
    assert both_fail >= 1  # Gemma 2 refuses the system role in both


def test_qwen3_thinking_switch_and_generation_prompt():
    files = _files()
    t = files["Qwen-Qwen3-0.6B.jinja"]
    msgs = CONVERSATIONS["user"]
    off = render(t, msgs, enable_thinking=False)
    on = render(t, msgs)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    hist = render(t, CONVERSATIONS["reasoning-history"])
    assert "add them" not in hist  # reasoning of earlier turns is stripped
    q35 = render(files["Qwen3.5-4B.jinja"], msgs)
    assert q35.endswith("<|im_start|>assistant\n<think>\n")  # Qwen3.5 opens the think block itself


def test_syntax_error_names_template_and_line():
    with pytest.raises(TemplateError) as ei:
        render("{{ messages[0].content }}\n{% for m in messages %}\n{{ m.content }\n{% endfor %}", [], name="my.jinja")
    assert ei.value.template_name == "my.jinja" and ei.value.line == 3
    assert "my.jinja, line 3" in str(ei.value)


def test_runtime_error_names_template_and_line():
    src = "line one\n{% if messages[0].role == 'system' %}\n{{ raise_exception('System role not supported') }}\n{% endif %}"
    with pytest.raises(TemplateError) as ei:
        render(src, [{"role": "system", "content": "x"}], name="gemma-like.jinja")
    assert ei.value.line == 3 and "System role not supported" in str(ei.value)
    with pytest.raises(TemplateError) as ei:
        render("a\nb\n{{ messages[5].content.upper() }}", [{"role": "user", "content": "x"}], name="idx.jinja")
    assert ei.value.line == 3 and "idx.jinja" in str(ei.value)


def test_sandbox_blocks_attribute_escape():
    with pytest.raises(TemplateError) as ei:
        render("{{ messages.__class__.__mro__[1].__subclasses__() }}", [], name="evil.jinja")
    assert "evil.jinja" in str(ei.value)


def test_tojson_not_html_escaped():
    out = render("{{ tools | tojson }}", [], tools=[{"name": "a<b>&'c", "x": "é"}])
    assert out == '[{"name": "a<b>&\'c", "x": "é"}]'


def test_bundled_template_mapping():
    from regraft.rag.template import bundled_template

    assert bundled_template("Qwen/Qwen3-32B").name == "Qwen-Qwen3-0.6B.jinja"
    assert bundled_template("Qwen/Qwen3-30B-A3B").name == "Qwen-Qwen3-0.6B.jinja"
    assert bundled_template("Qwen/Qwen3-30B-A3B-Base") is None
    assert bundled_template("Qwen/Qwen3-235B-A22B-Instruct-2507") is None  # not bundled: never guessed
    assert bundled_template("Qwen/Qwen2.5-7B-Instruct").name == "Qwen-Qwen2.5-7B-Instruct.jinja"
    assert bundled_template("meta-llama/Llama-3.1-70B-Instruct").name == "meta-llama-Llama-3.1-8B-Instruct.jinja"
    assert bundled_template("mistralai/Mistral-7B-Instruct-v0.3") is None
