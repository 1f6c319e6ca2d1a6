"""Serving and generation configs: readers for what users have, one normalised ServingConfig, family facts.

- :mod:`regraft.configs.model`: :class:`ServingConfig` (canonical keys, the key as written, unknown keys).
- :mod:`regraft.configs.readers`: generation_config.json, vLLM/SGLang YAML/JSON (``--config`` files, recipes),
  command lines (``vllm serve``, ``python -m sglang.launch_server``, ``llama-server``), Ollama Modelfiles.
- :mod:`regraft.configs.facts`: per-family facts (thinking protocol, sampling, context, eos, parsers) with sources.
- :mod:`regraft.configs.memory`: weights + KV cache per token, GPUs needed.
- :mod:`regraft.configs.port`: the translated config for a target and runtime, one reason per change.
"""
