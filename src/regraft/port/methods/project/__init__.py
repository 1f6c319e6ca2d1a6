"""``project``: training-free, rank-preserving projection of a LoRA onto a model of other shapes (see projection.py)."""
