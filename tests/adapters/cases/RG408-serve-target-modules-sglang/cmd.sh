python -m sglang.launch_server --model-path Qwen/Qwen3-8B --enable-lora --lora-paths a=/adapters/a \
  --max-lora-rank 16 --lora-target-modules qkv_proj o_proj
