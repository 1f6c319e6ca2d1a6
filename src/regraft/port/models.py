"""Loading whole models and tokenizers for the methods that run them (torch, transformers), and their progress bars."""

from __future__ import annotations

from pathlib import Path


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path, dev=None):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return m.to(dev or device()).eval()


def load_tokenizer(path):
    """The model folder's tokenizer, or None when it has none (tiny test models use raw ids)."""
    p = Path(path)
    if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return None
    if (p / "tokenizer.json").exists():
        # the tokenizer.json pipeline itself: AutoTokenizer may substitute the model family's class (transformers
        # 5 maps qwen2 -> Qwen2Tokenizer, which re-splits text its own way and breaks custom tokenizers)
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(p))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(p))


def progress(enabled: bool = True):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=not enabled)
