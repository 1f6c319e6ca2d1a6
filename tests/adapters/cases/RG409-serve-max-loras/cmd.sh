vllm serve Qwen/Qwen3-8B --enable-lora --max-lora-rank 16 --max-loras 4 --max-cpu-loras 2 \
  --lora-modules a=/adapters/a b=/adapters/b c=/adapters/c d=/adapters/d e=/adapters/e
