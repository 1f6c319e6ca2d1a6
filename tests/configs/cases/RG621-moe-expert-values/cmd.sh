llama-server -m qwen3-30b-a3b-q8_0.gguf -c 32768 --jinja --reasoning-format deepseek --temp 0.6 --top-k 20 --top-p 0.95 --min-p 0 --override-kv qwen3moe.expert_used_count=int:16
