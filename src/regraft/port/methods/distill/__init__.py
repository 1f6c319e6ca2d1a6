"""``distill``: carry an adapter to any target by distillation on synthetic prompts (see training.py)."""
