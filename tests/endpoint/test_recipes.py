"""Recipes printed by `check --runtime R` end with the matching `regraft verify --endpoint` command."""

import json

import pytest


@pytest.mark.parametrize("runtime,needle", [
    ("vllm", "--endpoint http://127.0.0.1:8000/v1 --model adapter --base-model Qwen/Qwen3-30B-A3B"),
    ("sglang", "--endpoint http://127.0.0.1:30000/v1 --model Qwen/Qwen3-30B-A3B:adapter"),
    ("llama.cpp", "--endpoint http://127.0.0.1:8080/v1 --model model.gguf --base-endpoint http://127.0.0.1:8081/v1"),
    ("ollama", "--endpoint http://127.0.0.1:11434/v1 --model adapter"),
    ("peft", None),
])
def test_recipe_ends_with_verify_command(capsys, runtime, needle):
    from regraft.cli.main import main

    main(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-30B-A3B", "--adapter", "example:qwen3-30b-a3b-attn",
          "--runtime", runtime, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    f = next(f for f in doc["targets"][0]["areas"]["lora"]["findings"] if f["code"] == "RG407")
    if needle is None:
        assert "verify" not in f["data"] and "regraft verify" not in f["message"] + f["hint"]
        return
    cmd = f["data"]["verify"]
    assert cmd.startswith("regraft verify --endpoint") and needle in cmd and "--adapter" in cmd
    assert f["hint"] == f"then prove it is applied: {cmd}"
    # the table output prints it right under the recipe
    main(["check", "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3-30B-A3B", "--adapter", "example:qwen3-30b-a3b-attn",
          "--runtime", runtime])
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if "RG407" in ln)
    assert "then prove it is applied: regraft verify --endpoint" in " ".join(lines[i + 1:i + 4])
    # the command parses: every flag is one `regraft verify` knows
    import argparse
    import shlex

    from regraft.cli import cmd_verify

    p = argparse.ArgumentParser()
    cmd_verify.add_parser(p.add_subparsers())
    p.parse_args(shlex.split(cmd.split("  #")[0])[1:])
