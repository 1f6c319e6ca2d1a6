# the reproduction of vllm#55193, image vllm/vllm-openai:v0.28.0: a down_proj-only adapter, LoRA restricted to qkv_proj
vllm serve Qwen/Qwen2.5-0.5B-Instruct --enable-lora --max-lora-rank 16 \
  --lora-modules ad=/adapters/down-only --lora-target-modules qkv_proj
