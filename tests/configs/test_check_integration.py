"""`regraft check ... --config FILE --rag FILE`: the Config and RAG columns, files read once, light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from regraft.cli.main import main

HERE = Path(__file__).parent
RAG = HERE.parent / "rag" / "cases" / "RG703-rag-budget" / "rag.yaml"
SERVE = HERE / "cases" / "RG612-yarn-mismatch" / "cmd.sh"


def test_issue_command_three_targets_json(capsys):
    from regraft.checks.area_config import read_config
    from regraft.configs import readers
    from regraft.rag import setup as rag_setup

    readers._read_cached.cache_clear()
    rag_setup._read_cached.cache_clear()
    rc = main(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507",
               "Qwen/Qwen3-8B", "--config", str(SERVE), "--rag", str(RAG), "--format", "json", "--fail-on", "never"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert [t["target"] for t in d["targets"]] == ["Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507",
                                                  "Qwen/Qwen3-8B"]
    verdicts = {t["target"]: (t["areas"]["config"]["verdict"], t["areas"]["rag"]["verdict"]) for t in d["targets"]}
    assert verdicts["Qwen/Qwen3-8B"][0] == "needs-port"  # --rope-scaling removed + no reasoning parser
    t235 = next(t for t in d["targets"] if t["target"] == "Qwen/Qwen3-235B-A22B-Instruct-2507")
    rg710 = [f for f in t235["areas"]["rag"]["findings"] if f["code"] == "RG710"]
    assert rg710[0]["verdict"] == "unknown"  # no bundled 2507 template: said, not guessed
    assert verdicts["Qwen/Qwen3-235B-A22B-Instruct-2507"][1] == "needs-port"  # enable_thinking is ignored there
    assert verdicts["Qwen/Qwen3-32B"][1] == "needs-port"  # 40 x 1,024 does not fit 32,768
    codes = {f["code"] for t in d["targets"] for a in t["areas"].values() for f in a["findings"]}
    assert {"RG612", "RG613", "RG703", "RG710"} <= codes
    # each file read once for all targets
    assert readers._read_cached.cache_info().misses == 1 and rag_setup._read_cached.cache_info().misses == 1
    assert read_config is readers.read_config


def test_table_has_config_and_rag_columns(capsys):
    main(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-32B", "--config", str(SERVE), "--rag", str(RAG),
          "--fail-on", "never"])
    out = capsys.readouterr().out
    assert "Config" in out and "RAG" in out and "RG703" in out


def _imports(args: list[str]) -> set[str]:
    code = (f"import sys; from regraft.cli.main import main; rc = main({args!r}); "
            "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'tiktoken') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))


def test_config_check_stays_light():
    assert _imports(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-32B", "--config", str(SERVE), "--format",
                     "json", "--fail-on", "never"]) == set()


def test_rag_check_loads_tokenizers_not_torch(qwen_dir_env):
    got = _imports(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-32B", "--rag", str(RAG), "--format", "json",
                    "--fail-on", "never"])
    assert "tokenizers" in got and "torch" not in got and "transformers" not in got  # tokenizer built already


def test_runtime_follows_the_config_and_a_contradicting_runtime_is_refused(tmp_path, capsys):
    """No --runtime: the LoRA is judged for the server of --config (vLLM here), said in a note; a --runtime of
    another family is an error naming both, exit 2. The headline says which area needs work."""
    cmd = tmp_path / "serve.sh"
    cmd.write_text("vllm serve Qwen/Qwen3-30B-A3B --enable-lora --max-lora-rank 8 --lora-modules a=/x\n")
    args = ["check", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-Base", "--adapter", "example:qwen3-30b-a3b-attn",
            "--config", str(cmd), "--format", "json", "--fail-on", "never"]
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["runtime"] == "vllm"
    assert any(f"the runtime of --config {cmd}" in n for n in d["notes"])
    t = d["targets"][0]
    assert t["areas"]["lora"]["verdict"] == "loads" and t["areas"]["config"]["verdict"] == "needs-port"
    assert t["verdict_text"] == "config: needs rewriting (regraft port config)"  # not "a port across shapes"
    assert main(args + ["--runtime", "vllm"]) == 0  # the same family: accepted
    capsys.readouterr()
    assert main(args + ["--runtime", "ollama"]) == 2
    err = capsys.readouterr().err
    assert "--runtime ollama does not match --config" in err and "vllm config" in err
    assert main(args[:-6] + ["--format", "json"]) == 0  # no --config: PEFT, as before
    assert json.loads(capsys.readouterr().out)["runtime"] == "peft"
