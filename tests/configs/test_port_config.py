"""port config: the translated file re-reads and re-checks clean on what regraft knows; one reason per change;
unknowns left out and named; outputs atomic, never over the input or an existing file without --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regraft.checks.area_config import run_config
from regraft.checks.finding import Verdict
from regraft.cli.main import main
from regraft.configs.port import plan
from regraft.configs.readers import read_config
from regraft.configs.writers import render
from regraft.inspection.resolve import resolve_model

CASES = Path(__file__).parent / "cases"
REAL = Path(__file__).parent / "real"

SERVE = """model: Qwen/Qwen3-30B-A3B-Base
max-model-len: 65536
hf-overrides: {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
enable-lora: true
max-lora-rank: 48
tensor-parallel-size: 2
enable-expert-parallel: true
chat_template_kwargs: {enable_thinking: false}
reasoning-parser: qwen3
sampling: {temperature: 0.7, top_p: 0.8, top_k: 20, min_p: 0, presence_penalty: 1.5}
stop_token_ids: [151643]
colour: blue
regraft: {gpu_memory_gb: 80, concurrent_requests: 4}
"""


def port(tmp_path, text_or_path, target, runtime=None, source=None, name="serve.yaml"):
    if isinstance(text_or_path, Path):
        src = text_or_path
    else:
        src = tmp_path / name
        src.write_text(text_or_path)
    cfg = read_config(src)
    s = resolve_model(source) if source else None
    res = plan(cfg, s, resolve_model(target), runtime)
    text, cmd = render(res)
    ext = {"vllm": ".yaml", "sglang": ".yaml", "llama.cpp": ".sh", "ollama": ".Modelfile"}.get(res.runtime, ".json")
    out = tmp_path / (f"ported-{res.runtime}{ext}" if res.runtime != "transformers" else "generation_config.json")
    out.write_text(text)
    return res, out, cmd


def recheck(out, target, runtime=None):
    r = run_config(None, resolve_model(target), {"config": str(out), "runtime": runtime})
    return r, [f for f in r.findings if f.verdict in (Verdict.NEEDS_PORT, Verdict.NEEDS_RELAYOUT, Verdict.CANNOT)]


def test_issue_example_to_235b_instruct_2507_vllm(tmp_path):
    res, out, cmd = port(tmp_path, SERVE, "Qwen/Qwen3-235B-A22B-Instruct-2507", "vllm", "Qwen/Qwen3-30B-A3B-Base")
    changes = {c.key: c for c in res.changes}
    assert changes["rope_scaling"].new is None and "native 262,144" in changes["rope_scaling"].reason
    assert changes["tensor_parallel_size"].new == 8  # 438 GiB of bf16 weights + KV need 7 x 80 GiB -> TP 8
    assert changes["chat_template_kwargs"].new is None and changes["reasoning_parser"].new is None
    assert changes["stop_token_ids"].new == [151645, 151643]
    assert changes["max_lora_rank"].new == 64  # vLLM accepts 1, 8, 16, 32, 64, ...
    assert all(c.reason for c in res.changes)
    left = dict(res.left_out)
    assert "colour" in left and "stop_token_ids" in left  # unknown key, and a per-request setting, both named
    c2 = read_config(out)
    assert not c2.unknown and c2.values["model"] == "Qwen/Qwen3-235B-A22B-Instruct-2507"
    assert c2.sampling == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0, "presence_penalty": 1.5}
    assert cmd.startswith("vllm serve Qwen/Qwen3-235B-A22B-Instruct-2507 --max-model-len 65536")
    _, bad = recheck(out, "Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert not [f for f in bad if f.code != "RG660"], bad  # memory: the GPU size is not in the ported file


def test_qwen_readme_command_gets_yarn_in_current_vllm_form(tmp_path):
    res, out, cmd = port(tmp_path, CASES / "RG611-context-needs-yarn" / "cmd.sh", "Qwen/Qwen3-8B", "vllm")
    rope = next(c for c in res.changes if c.key == "rope_scaling").new
    assert rope == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert any(c.key == "enable_reasoning" and c.new is None for c in res.changes)
    doc = read_config(out)
    assert doc.rope_field == "hf_overrides.rope_parameters" and doc.yarn["factor"] == 4.0
    assert "--hf-overrides" in cmd and "rope_parameters" in cmd and "--rope-scaling" not in cmd
    _, bad = recheck(out, "Qwen/Qwen3-8B")
    assert not bad, bad


def test_to_dense_32b_llama_cpp(tmp_path):
    res, out, cmd = port(tmp_path, SERVE, "Qwen/Qwen3-32B", "llama.cpp", "Qwen/Qwen3-30B-A3B-Base")
    assert "--rope-scaling yarn --rope-scale 2 --yarn-orig-ctx 32768" in cmd  # 65,536 needs factor 2, not 4
    assert "--reasoning-format deepseek" in cmd and "-c 65536" in cmd and "--reasoning-budget 0" in cmd
    keys = {c.key for c in res.changes}
    assert "enable_expert_parallel" in keys
    left = dict(res.left_out)
    assert "model" in left and "enable_lora" in left and "tensor_parallel_size" in left
    _, bad = recheck(out, "Qwen/Qwen3-32B")
    assert not bad, bad


def test_modelfile_to_instruct_2507(tmp_path):
    res, out, _ = port(tmp_path, CASES / "RG640-sampling-defaults" / "Modelfile", "Qwen/Qwen3-235B-A22B-Instruct-2507",
                       source="Qwen/Qwen3-32B")
    text = out.read_text()
    assert "PARAMETER temperature 0.7" in text and "PARAMETER top_p 0.8" in text and "PARAMETER num_ctx 32768" in text
    assert "# FROM" in text and dict(res.left_out)["model"]
    _, bad = recheck(out, "Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert not bad, bad


def test_base_generation_config_to_chat_model(tmp_path):
    _res, out, _ = port(tmp_path, CASES / "RG642-stop-token-ids" / "generation_config.json", "Qwen/Qwen3-32B",
                       source="Qwen/Qwen3-4B-Base")
    doc = json.loads(out.read_text())
    assert doc["eos_token_id"] == [151645, 151643] and doc["do_sample"] is True
    assert (doc["temperature"], doc["top_p"], doc["top_k"], doc["min_p"]) == (0.6, 0.95, 20, 0.0)
    assert doc["max_new_tokens"] == 38912
    _, bad = recheck(out, "Qwen/Qwen3-32B")
    assert not bad, bad


def test_recipe_to_base_drops_chat_settings(tmp_path):
    res, out, _ = port(tmp_path, REAL / "vllm-recipes-qwen3-30b-a3b.yaml", "Qwen/Qwen3-30B-A3B-Base",
                       source="Qwen/Qwen3-30B-A3B")
    removed = {c.key for c in res.changes if c.new is None}
    assert {"reasoning_parser", "tool_call_parser", "enable_auto_tool_choice"} <= removed
    _, bad = recheck(out, "Qwen/Qwen3-30B-A3B-Base")
    assert not bad, bad


def test_cli_port_config_writes_atomically_and_refuses_overwrites(tmp_path, capsys):
    src = tmp_path / "serve.yaml"
    src.write_text(SERVE)
    out = tmp_path / "serve-235b.yaml"
    argv = ["port", "config", str(src), "--to", "Qwen/Qwen3-235B-A22B-Instruct-2507", "--runtime", "vllm",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "~ tensor_parallel_size: 2 -> 8" in text and "? colour: left out" in text and f"wrote {out}" in text
    first = out.read_text()
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
    assert main(argv[:-2] + ["--out", str(src)]) == 2 and "input" in capsys.readouterr().err
    assert src.read_text() == SERVE and out.read_text() == first
    assert main(argv + ["--force"]) == 0
    capsys.readouterr()
    assert not [p for p in tmp_path.iterdir() if "regraft-tmp" in p.name]
    assert main(["port", "config", str(src), "--to", "Qwen/Qwen3-32B", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["runtime"] == "vllm" and d["text"] and any(c["key"] == "enable_expert_parallel" for c in d["changes"])


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max-model-len: lots\n")
    assert main(["check", "Qwen/Qwen3-32B", "Qwen/Qwen3-8B", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'max-model-len' must be an integer" in err and "bad.yaml" in err


@pytest.mark.parametrize("runtime", ["vllm", "sglang", "llama.cpp", "ollama", "transformers"])
def test_every_runtime_writes_something_rereadable(tmp_path, runtime):
    _res, out, _ = port(tmp_path, SERVE, "Qwen/Qwen3-32B", runtime, "Qwen/Qwen3-30B-A3B-Base")
    c = read_config(out)
    assert not c.unknown
    if runtime not in ("transformers", "ollama"):
        assert c.values["max_model_len"] == 65536 and c.yarn["factor"] == 2.0
