# real: QwenLM/Qwen3 docs/source/deployment/vllm.md line 260
vllm serve Qwen/Qwen3-8B --rope-scaling '{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}' --max-model-len 131072
