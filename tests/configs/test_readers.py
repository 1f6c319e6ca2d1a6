"""Config readers: every accepted format, unknown keys reported, wrong types named, real recipes and commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from regraft.configs.readers import parse_config_text, read_config
from regraft.errors import FileFormatError, InputError

REAL = Path(__file__).parent / "real"


def cfg(text: str, name: str = "serve.yaml"):
    return parse_config_text(text, Path(name))


def test_vllm_yaml_dashes_underscores_sections_and_unknowns():
    c = cfg("model: Qwen/Qwen3-32B\nmax-model-len: 32k\ntensor_parallel_size: 4\nenable-lora: true\n"
            "max-lora-rank: 64\nhf-overrides: {\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2.0, "
            "\"original_max_position_embeddings\": 32768}, \"num_experts_per_tok\": 4}\n"
            "default-chat-template-kwargs: '{\"enable_thinking\": false}'\n"
            "sampling: {temperature: 0.7, top_p: 0.8, top_k: 20, min_p: 0, presence_penalty: 1.5}\n"
            "host: 0.0.0.0\nmax-model-length: 5\nregraft: {gpu_memory_gb: 141, concurrent_requests: 16, colour: red}\n")
    assert c.runtime == "vllm" and c.format == "vllm"
    assert c.values["max_model_len"] == 32768 and c.values["tensor_parallel_size"] == 4
    assert c.values["rope_scaling"] == {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32768}
    assert c.rope_field == "hf_overrides.rope_scaling" and c.values["num_experts_per_tok"] == 4
    assert c.thinking_flag is False
    assert c.sampling == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0, "presence_penalty": 1.5}
    assert c.values["gpu_memory_gb"] == 141.0 and c.values["concurrent_requests"] == 16
    assert c.passthrough == {"host": "0.0.0.0"}
    assert [k for k, _ in c.unknown] == ["max-model-length", "regraft.colour"]
    assert c.where("max_model_len") == "max-model-len"


@pytest.mark.parametrize("text,key,expect", [
    ("max-model-len: lots\n", "max-model-len", "must be an integer"),
    ("enable-lora: maybe\n", "enable-lora", "must be true or false"),
    ("hf-overrides: '{not json'\n", "hf-overrides", "must be a JSON object"),
    ("sampling: {temperature: hot}\n", "sampling.temperature", "must be a number"),
    ("stop_token_ids: [a, b]\n", "stop_token_ids", "must be an integer or a list of integers"),
    ("sampling: 0.7\n", "sampling", "must be a mapping"),
])
def test_wrong_types_name_the_key(text, key, expect):
    with pytest.raises(FileFormatError) as ei:
        cfg(text)
    assert f"'{key}'" in str(ei.value) and expect in str(ei.value) and "serve.yaml" in str(ei.value)


def test_invalid_yaml_and_json_name_the_line(tmp_path):
    with pytest.raises(FileFormatError) as ei:
        cfg("model: x\nmax-model-len: [1, 2\n")
    assert "line 3" in str(ei.value) or "line 2" in str(ei.value)
    p = tmp_path / "generation_config.json"
    p.write_text('{"temperature": 0.6,\n "top_p": }')
    with pytest.raises(FileFormatError) as ei:
        read_config(p)
    assert "line 2" in str(ei.value)
    with pytest.raises(InputError):
        read_config(tmp_path / "missing.yaml")


def test_generation_config():
    c = cfg('{"do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": [151645, 151643],'
            ' "pad_token_id": 151643, "transformers_version": "4.51.0", "max_new_tokens": 512, "weird": 1}',
            "generation_config.json")
    assert c.format == "generation_config" and c.runtime == "transformers"
    assert c.values["eos_token_id"] == [151645, 151643] and c.values["max_tokens"] == 512
    assert c.unknown == [("weird", "not a generation_config.json field regraft knows")]


def test_sglang_command_from_qwen_docs():
    c = cfg("python -m sglang.launch_server --model-path Qwen/Qwen3-8B --json-model-override-args "
            "'{\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":32768}}' "
            "--context-length 131072 --reasoning-parser qwen3 --tp-size 2", "cmd.sh")
    assert c.runtime == "sglang" and c.values["model"] == "Qwen/Qwen3-8B" and c.values["max_model_len"] == 131072
    assert c.yarn["factor"] == 4.0 and c.values["tensor_parallel_size"] == 2 and not c.unknown


def test_llama_server_command_from_qwen_readme():
    # QwenLM/Qwen3 README.md line 228 (verbatim)
    c = cfg("./llama-server -hf Qwen/Qwen3-8B-GGUF:Q8_0 --jinja --reasoning-format deepseek -ngl 99 -fa -sm row "
            "--temp 0.6 --top-k 20 --top-p 0.95 --min-p 0 -c 40960 -n 32768 --no-context-shift --port 8080", "x.sh")
    assert c.runtime == "llama.cpp" and c.values["max_model_len"] == 40960 and c.values["max_tokens"] == 32768
    assert c.sampling == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0}
    assert c.values["reasoning_format"] == "deepseek" and c.values["jinja"] is True
    assert set(c.passthrough) == {"-ngl", "-fa", "-sm", "--no-context-shift", "--port"} and not c.unknown


def test_llama_server_yarn_flags_and_expert_override():
    c = cfg("llama-server -m q.gguf -c 131072 --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 32768 "
            "--override-kv qwen3moe.expert_used_count=int:4 --bogus-flag 1", "x.sh")
    assert c.yarn == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert c.values["num_experts_per_tok"] == 4
    assert c.unknown == [("--bogus-flag", "not a llama.cpp setting regraft knows")]


def test_modelfile():
    c = cfg('FROM qwen3:32b\n# comment\nPARAMETER num_ctx 40960\nPARAMETER temperature 0.6\nPARAMETER stop "<|im_end|>"\n'
            'PARAMETER stop "<|endoftext|>"\nPARAMETER seed 42\nPARAMETER warp 9\nSYSTEM """You are\nterse."""\n'
            'TEMPLATE """{{ .Prompt }}"""\nFROBNICATE x\n', "Modelfile")
    assert c.format == "ollama" and c.values["model"] == "qwen3:32b" and c.values["max_model_len"] == 40960
    assert c.values["stop"] == ["<|im_end|>", "<|endoftext|>"] and c.values["system"] == "You are\nterse."
    assert c.passthrough == {"PARAMETER seed": "42"}
    assert [k for k, _ in c.unknown] == ["PARAMETER warp (line 8)", "FROBNICATE (line 12)"]


@pytest.mark.parametrize("name,model,expect", [
    ("vllm-recipes-qwen3-8b.yaml", "Qwen/Qwen3-8B", {"reasoning_parser": "qwen3", "tool_call_parser": "hermes"}),
    ("vllm-recipes-qwen3-30b-a3b.yaml", "Qwen/Qwen3-30B-A3B", {"reasoning_parser": "qwen3"}),
    ("vllm-recipes-qwen3-235b-a22b-instruct-2507.yaml", "Qwen/Qwen3-235B-A22B-Instruct-2507",
     {"tool_call_parser": "hermes", "enable_auto_tool_choice": True}),
    ("vllm-recipes-qwen3-next-80b-a3b-instruct.yaml", "Qwen/Qwen3-Next-80B-A3B-Instruct", {}),
    ("vllm-recipes-qwen3-vl-235b-a22b-instruct.yaml", "Qwen/Qwen3-VL-235B-A22B-Instruct", {}),
])
def test_real_vllm_recipes(name, model, expect):
    c = read_config(REAL / name)
    assert c.format == "recipe" and c.values["model"] == model and not c.unknown
    for k, v in expect.items():
        assert c.values[k] == v
    assert "reasoning_parser" not in c.values or "reasoning_parser" in expect


def test_read_once_per_path(tmp_path):
    p = tmp_path / "serve.yaml"
    p.write_text("max-model-len: 1000\n")
    assert read_config(p) is read_config(p)
