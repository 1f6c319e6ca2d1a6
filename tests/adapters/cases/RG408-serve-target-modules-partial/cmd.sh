vllm serve Qwen/Qwen3-8B --enable-lora --max-lora-rank 16 --lora-modules sql=/adapters/sql \
  --lora-target-modules qkv_proj o_proj
