"""The hybrid's start-up contract uses the same context and template functions as `check --config` / `--rag`."""

from __future__ import annotations

import json

from regraft.configs.facts import served_context
from regraft.hybrid.contract import context_window, load_side_from_dir


def test_served_context_yarn_and_plain():
    base = {"model_type": "qwen3", "max_position_embeddings": 40960}
    assert served_context(base) == (40960, "max_position_embeddings")
    yarn = {**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert served_context(yarn)[0] == 131072
    v5 = {**base, "rope_parameters": {"rope_type": "yarn", "factor": 2, "original_max_position_embeddings": 32768,
                                      "rope_theta": 1e6}}
    assert served_context(v5)[0] == 65536
    # a non-YaRN scaling (or a damaged one) does not extend the window
    assert served_context({**base, "rope_scaling": {"rope_type": "linear", "factor": 4.0}})[0] == 40960
    assert served_context({**base, "rope_scaling": {"rope_type": "yarn", "factor": "4"}})[0] == 40960
    assert served_context({"n_positions": 1024}) == (1024, "n_positions")
    assert served_context({})[0] is None


def test_contract_side_uses_yarn_window(tmp_path):
    d = tmp_path / "Qwen3-8B-yarn"
    d.mkdir()
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
           "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
           "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    (d / "config.json").write_text(json.dumps(cfg))
    side = load_side_from_dir("master", d)
    assert side.spec is not None
    assert side.context_window == 131072 == context_window(side.spec)
