"""Bad input never crashes the readers or the checks: random YAML/command/Modelfile text either parses (unknown keys
reported) or raises one InputError subclass naming the file."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regraft.checks.area_config import ConfigContext
from regraft.checks.registry import rules_for
from regraft.configs.readers import parse_config_text
from regraft.errors import InputError
from regraft.inspection.resolve import resolve_model

KEYS = ["max-model-len", "max_model_len", "tensor-parallel-size", "hf-overrides", "enable-lora", "max-lora-rank",
        "reasoning-parser", "chat_template_kwargs", "sampling", "stop_token_ids", "regraft", "enable-expert-parallel",
        "rope-scaling", "default-chat-template-kwargs", "command", "temperature", "eos_token_id", "runtime", "zzz"]
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 300000) | st.floats(allow_nan=False, width=32)
                      | st.text(max_size=12),
                      lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(KEYS + ["factor", "rope_type",
                                                                                                   "enable_thinking"]),
                                                                          c, max_size=3), max_leaves=6)
TARGETS = [resolve_model(n) for n in ("Qwen/Qwen3-32B", "Qwen/Qwen3-235B-A22B-Instruct-2507",
                                      "Qwen/Qwen3-30B-A3B-Base", "Qwen/Qwen3.5-27B")]


def _run_rules(cfg):
    for t in TARGETS:
        ctx = ConfigContext(TARGETS[0], t, cfg, cfg.runtime or "vllm")
        for r in rules_for("config"):
            list(r.func(ctx))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_random_mappings(doc):
    text = yaml.safe_dump(doc)
    try:
        cfg = parse_config_text(text, Path("fuzz.yaml"))
    except InputError as e:
        assert "fuzz.yaml" in str(e)
        return
    _run_rules(cfg)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["--max-model-len", "-c", "--temp", "--rope-scaling", "yarn", "--rope-scale", "x",
                                 "4", "-tp", "--enable-lora", "--override-kv", "a=int:3", "'", "--reasoning-budget",
                                 "0", "--", "-", "=", "--max-model-len=7"]), max_size=10),
       st.sampled_from(["vllm serve Qwen/Qwen3-8B", "llama-server", "python -m sglang.launch_server"]))
def test_random_command_lines(args, head):
    try:
        cfg = parse_config_text(head + " " + " ".join(args), Path("fuzz.sh"))
    except InputError as e:
        assert "fuzz.sh" in str(e)
        return
    _run_rules(cfg)
