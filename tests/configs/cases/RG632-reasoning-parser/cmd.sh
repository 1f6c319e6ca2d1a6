# real: QwenLM/Qwen3 README.md line 344 (max-model-len lowered to the target's native length)
vllm serve Qwen/Qwen3-30B-A3B-Thinking-2507 --port 8000 --max-model-len 32768 --enable-reasoning --reasoning-parser deepseek_r1
