"""port rag: the ported setup re-checks clean (budget fits, target template, stop strings, thinking)."""

from __future__ import annotations

from pathlib import Path

import yaml

from regraft.checks.area_rag import run_rag
from regraft.checks.finding import Verdict
from regraft.cli.main import main
from regraft.inspection.resolve import resolve_model
from regraft.rag.port import plan_rag, to_doc
from regraft.rag.setup import read_rag

CASES = Path(__file__).parent / "cases"


def port(tmp_path, case, target, source=None, embedding=None):
    setup = read_rag(CASES / case / "rag.yaml")
    res = plan_rag(setup, resolve_model(source) if source else None, resolve_model(target), embedding)
    out = tmp_path / "rag-ported.yaml"
    out.write_text(yaml.safe_dump(to_doc(res.setup), sort_keys=False))
    return res, out


def recheck(out, target, source=None):
    r = run_rag(resolve_model(source) if source else None, resolve_model(target), {"rag": str(out)})
    bad = [f for f in r.findings if f.verdict in (Verdict.NEEDS_PORT, Verdict.CANNOT)]
    return r, bad


def test_over_budget_top_k_rebudgeted(tmp_path, qwen_dir):
    res, out = port(tmp_path, "RG703-rag-budget", "Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507")
    top = next(c for c in res.changes if c.key == "retrieval.top_k")
    # 32,768 - (37 prompt + 256 question + 8,192 answer) = 24,283; each chunk costs 1,024 + 1 separator token
    assert (top.old, top.new) == (40, 23)
    assert res.budget["margin"] >= 0 and res.budget["top_k"] == 23 and res.budget["quality"] == "exact"
    _r, bad = recheck(out, "Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert not bad, bad
    assert "<|im_start|>system" in read_rag(out).rendered_example


def test_llama_setup_to_qwen_markers_and_stop(tmp_path, qwen_dir):
    _res, out = port(tmp_path, "RG711-rag-special-tokens", "Qwen/Qwen3-32B", "meta-llama/Llama-3.1-8B-Instruct")
    s = read_rag(out)
    assert s.user == "Use these notes:\n{context}\n\n{question}" and s.stop == ["<|im_end|>", "<|endoftext|>"]
    assert s.rendered_example.startswith("<|im_start|>user\nUse these notes:")
    _, bad = recheck(out, "Qwen/Qwen3-32B", "meta-llama/Llama-3.1-8B-Instruct")
    assert not bad, bad


def test_to_base_writes_plain_prompt(tmp_path, qwen_dir):
    _res, out = port(tmp_path, "RG710-rag-template", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-30B-A3B")
    s = read_rag(out)
    assert s.prompt_format == "plain" and "<|im_start|>" not in s.rendered_example
    _, bad = recheck(out, "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-30B-A3B")
    assert not bad, bad


def test_to_thinking_2507_reserves_thinking(tmp_path, qwen_dir):
    _res, out = port(tmp_path, "RG712-rag-thinking-budget", "Qwen/Qwen3-235B-A22B-Thinking-2507",
                    "Qwen/Qwen3-235B-A22B-Instruct-2507")
    s = read_rag(out)
    assert s.thinking_budget == 81920 and s.enable_thinking is None  # the card's advice fits in 262,144
    r, bad = recheck(out, "Qwen/Qwen3-235B-A22B-Thinking-2507", "Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert not bad, bad
    assert any(f.verdict is Verdict.UNKNOWN for f in r.findings)  # no bundled 2507 template: said, not guessed


def test_hybrid_target_keeps_non_thinking(tmp_path, qwen_dir):
    _res, out = port(tmp_path, "RG710-rag-template", "Qwen/Qwen3-32B", "Qwen/Qwen2.5-7B-Instruct")
    assert read_rag(out).enable_thinking is False
    assert read_rag(out).rendered_example.endswith("<think>\n\n</think>\n\n")


def test_embedding_change_names_re_embedding(tmp_path, qwen_dir):
    res, _out = port(tmp_path, "RG700-rag-unknown-key", "Qwen/Qwen3-32B", "Qwen/Qwen3-32B",
                    embedding="intfloat/multilingual-e5-large")
    assert any("re-embed 120,000 chunks" in n for n in res.notes)
    assert dict(res.left_out).keys() == {"retrieval.topk", "retrieval.reranker"}


def test_cli_port_rag(tmp_path, capsys, qwen_dir):
    out = tmp_path / "rag-32b.yaml"
    src = CASES / "RG703-rag-budget" / "rag.yaml"
    argv = ["port", "rag", str(src), "--to", "Qwen/Qwen3-32B", "--from", "Qwen/Qwen3-235B-A22B-Instruct-2507"]
    assert main(argv + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "~ retrieval.top_k: 40 -> 23" in text and "margin" in text
    assert main(argv + ["--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["port", "rag", str(src), "--to", "Qwen/Qwen3-32B", "--format", "json"]) == 0  # no source: estimate
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["budget"]["quality"] == "estimate" and d["budget"]["chunk_tokens"] == 1024
    assert read_rag(out).top_k == 23 and out.read_text().startswith("# ported by regraft for Qwen/Qwen3-32B")


def test_local_model_folder_tokenizer_and_template_win(tmp_path, qwen_dir):
    """A local model folder's own tokenizer.json and chat template are used (exact), not the bundled ones."""
    import json
    import shutil

    from regraft.rag.template import bundled_template

    model = tmp_path / "my-qwen3-finetune"
    model.mkdir()
    cfg = json.loads((Path(__file__).parents[2] / "src/regraft/catalog/models/Qwen__Qwen3-8B.json").read_text())
    (model / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))
    shutil.copy(qwen_dir / "tokenizer.json", model / "tokenizer.json")
    template = bundled_template("Qwen/Qwen3-8B").source
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "chat_template": template}))
    r = run_rag(resolve_model("Qwen/Qwen3-8B"), resolve_model(str(model)),
                {"rag": str(CASES / "RG700-rag-unknown-key" / "rag.yaml")})
    msgs = {f.code: f.message for f in r.findings}
    assert "tokenizer.json of" in msgs["RG701"] and "my-qwen3-finetune" in msgs["RG701"]
    assert msgs["RG710"].startswith("rendered with chat template of")
    assert "margin 26,333" in msgs["RG703"]  # same numbers as with the bundled tokenizer and template


def test_template_refusing_system_role_is_named_and_port_folds_it(tmp_path, qwen_dir):
    """A local model whose template refuses the system role (Gemma 2's, verbatim): the check names the template and
    line; port rag folds the system text into the user turn and the result renders."""
    import json
    from importlib import resources

    model = tmp_path / "gemma-like"
    model.mkdir()
    cfg = json.loads((Path(__file__).parents[2] / "src/regraft/catalog/models/Qwen__Qwen3-8B.json").read_text())
    (model / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))
    gemma = resources.files("regraft.rag").joinpath("templates", "google-gemma-2-2b-it.jinja").read_text()
    (model / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "chat_template": gemma}))
    target = resolve_model(str(model))
    src = CASES / "RG700-rag-unknown-key" / "rag.yaml"
    r = run_rag(resolve_model("Qwen/Qwen3-8B"), target, {"rag": str(src)})
    f = next(f for f in r.findings if f.code == "RG710")
    assert f.verdict is Verdict.CANNOT and "gemma-like (its own template), line 1" in f.message and "System role not supported" in f.message
    res = plan_rag(read_rag(src), resolve_model("Qwen/Qwen3-8B"), target)
    assert res.setup.system is None and res.setup.user.startswith("Answer from the context only.\n\nContext:")
    assert res.setup.rendered_example.startswith("<bos><start_of_turn>user\nAnswer from the context only.")


def test_soft_switch_no_think(tmp_path, qwen_dir):
    """'/no_think' in the system prompt turns a hybrid Qwen3 to non-thinking; on Instruct-2507 it is plain text."""
    setup = tmp_path / "rag.yaml"
    setup.write_text("chunking: {size: 256}\nretrieval: {top_k: 4}\n"
                     "prompt: {system: 'Answer briefly. /no_think', user: '{context}\\n\\n{question}'}\n"
                     "generation: {answer_tokens: 512}\n")
    src = resolve_model("Qwen/Qwen3-8B")
    hybrid = run_rag(src, resolve_model("Qwen/Qwen3-32B"), {"rag": str(setup)})
    assert not [f for f in hybrid.findings if f.code == "RG712"]  # not thinking: no reserve needed
    inst = run_rag(src, resolve_model("Qwen/Qwen3-235B-A22B-Instruct-2507"), {"rag": str(setup)})
    msgs = [f.message for f in inst.findings if f.code == "RG712"]
    assert msgs and "/no_think" in msgs[0] and "plain text" in msgs[0]
