"""RAG setups: reader, tokenizers (incl. the exact Qwen tokenizer built offline), chat-template rendering, budgets.

Nothing here imports torch; ``tokenizers``/``transformers`` are imported only when a tokenizer is needed.
"""
