vllm serve Qwen/Qwen3-8B --enable-lora --max-lora-rank 16 --lora-extra-vocab-size 256 --lora-modules tok=/adapters/tok
