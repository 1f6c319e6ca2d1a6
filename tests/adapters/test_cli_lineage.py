"""The issue-13 scenario end to end through the CLI: an Unsloth adapter on its own base is not "unrelated"; a
serving command line whose --lora-target-modules misses the adapter is an error with exit 1."""

from __future__ import annotations

import json

from regraft.cli.main import main
from regraft.inspection.resolve import resolve_model
from tests.adapters.synth import synth_adapter


def test_unsloth_adapter_on_its_own_base_through_the_cli(tmp_path, capsys):
    base = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    ad = synth_adapter(tmp_path / "a", {"peft_type": "LORA", "r": 32, "lora_alpha": 32, "layers_to_transform": [0, 1],
                                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                                        "base_model_name_or_path": "unsloth/qwen2.5-7b-instruct-unsloth-bnb-4bit"}, base)
    rc = main(["check", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B",
               "--adapter", str(ad), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    own, sib = out["targets"]
    assert rc == 0
    assert own["verdict"] == "loads" and sib["verdict"] == "loads-different-weights"
    codes = [[f["code"] for f in t["areas"]["lora"]["findings"] if f["code"].startswith("RG2")] for t in (own, sib)]
    assert codes == [["RG200"], ["RG201"]]


def test_serving_command_line_disjoint_target_modules_fails_the_check(tmp_path, capsys):
    base = resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    ad = synth_adapter(tmp_path / "a", {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["down_proj"]},
                       base)
    cmd = tmp_path / "serve.sh"
    cmd.write_text("# vllm==0.28.0\nvllm serve Qwen/Qwen2.5-0.5B-Instruct --enable-lora --lora-modules a=/x "
                   "--lora-target-modules qkv_proj o_proj\n")
    rc = main(["check", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "--adapter", str(ad),
               "--config", str(cmd), "--runtime", "vllm", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    f = [f for f in out["targets"][0]["areas"]["lora"]["findings"] if f["code"] == "RG408"]
    assert rc == 1 and f and "vllm 0.28.0" in f[0]["message"] and f[0]["data"]["dropped"] == ["down_proj"]
