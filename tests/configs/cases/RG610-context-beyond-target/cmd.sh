# real: QwenLM/Qwen3 README (2507 serving), with the 235B model
vllm serve Qwen/Qwen3-235B-A22B-Instruct-2507 --port 8000 --tensor-parallel-size 8 --max-model-len 262144
