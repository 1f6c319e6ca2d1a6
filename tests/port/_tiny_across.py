"""Tiny real models for the transfer tests, built at test time (no zoo): a source, an exact reparametrisation of it
(permuted hidden dims, KV groups, query heads within groups, FFN neurons, zero-padded width) and a PEFT adapter."""

from __future__ import annotations

import math
from pathlib import Path

import torch

DENSE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, vocab_size=64, max_position_embeddings=64, tie_word_embeddings=True, rms_norm_eps=1e-6)
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def make_model(path: Path, model_type: str = "qwen2", seed: int = 0, **over) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, **{**DENSE, **over})
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # bigger weights than the 0.02 init so that layers do something measurable
        for n, p in m.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 / math.sqrt(p.shape[1]))
            elif "norm" in n:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    m.save_pretrained(path)
    return Path(path)


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def adapter(model_dir: Path, out: Path, targets=None, r=4, alpha=8, seed=0, std=0.3, **kw) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(load(model_dir), LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or ATTN + MLP,
                                                     lora_dropout=0.0, **kw))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * std)
    pm.save_pretrained(out)
    return Path(out)


def _take(w, idx, dim, fill=0.0):
    shape = list(w.shape)
    shape[dim] = len(idx)
    out = torch.full(shape, fill, dtype=w.dtype)
    src = [i for i in idx if i >= 0]
    dst = [j for j, i in enumerate(idx) if i >= 0]
    out.index_copy_(dim, torch.tensor(dst), w.index_select(dim, torch.tensor(src)))
    return out


def reparametrise(src_dir: Path, out: Path, seed: int = 0, pad_hidden: int = 8, pad_ffn: int = 16) -> Path:
    """An exact function-preserving rewrite of ``src_dir`` with other shapes (ground truth GR = 1)."""
    from transformers import AutoModelForCausalLM

    m = load(src_dir)
    cfg = m.config
    g = torch.Generator().manual_seed(seed)
    Hd, hd, nkv = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads
    rep = cfg.num_attention_heads // nkv

    def perm_pad(n, pad):
        base = list(range(n)) + [-1] * pad
        return [base[i] for i in torch.randperm(len(base), generator=g).tolist()]

    hid = perm_pad(Hd, pad_hidden)
    H2 = len(hid)
    scale = math.sqrt(Hd / H2)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    maps = {"hidden": hid, "layers": []}
    new = {"model.embed_tokens.weight": _take(sd["model.embed_tokens.weight"], hid, 1),
           "model.norm.weight": _take(sd["model.norm.weight"], hid, 0, 1.0) * scale}
    for li in range(cfg.num_hidden_layers):
        p = f"model.layers.{li}."
        groups = torch.randperm(nkv, generator=g).tolist()
        qh = []
        for gi in groups:
            qh += [gi * rep + r for r in torch.randperm(rep, generator=g).tolist()]
        qi = [h * hd + d for h in qh for d in range(hd)]
        kvi = [h * hd + d for h in groups for d in range(hd)]
        fi = perm_pad(cfg.intermediate_size, pad_ffn)
        maps["layers"].append({"q": qi, "kv": kvi, "ffn": fi})
        for n in ("input_layernorm", "post_attention_layernorm"):
            new[p + n + ".weight"] = _take(sd[p + n + ".weight"], hid, 0, 1.0) * scale
        for n, rows in (("q_proj", qi), ("k_proj", kvi), ("v_proj", kvi)):
            new[f"{p}self_attn.{n}.weight"] = _take(_take(sd[f"{p}self_attn.{n}.weight"], rows, 0), hid, 1)
            if f"{p}self_attn.{n}.bias" in sd:
                new[f"{p}self_attn.{n}.bias"] = _take(sd[f"{p}self_attn.{n}.bias"], rows, 0)
        for n in ("q_norm", "k_norm"):
            if f"{p}self_attn.{n}.weight" in sd:
                new[f"{p}self_attn.{n}.weight"] = sd[f"{p}self_attn.{n}.weight"]
        new[f"{p}self_attn.o_proj.weight"] = _take(_take(sd[f"{p}self_attn.o_proj.weight"], hid, 0), qi, 1)
        for n in ("gate_proj", "up_proj"):
            new[f"{p}mlp.{n}.weight"] = _take(_take(sd[f"{p}mlp.{n}.weight"], fi, 0), hid, 1)
        new[f"{p}mlp.down_proj.weight"] = _take(_take(sd[f"{p}mlp.down_proj.weight"], hid, 0), fi, 1)
    c2 = cfg.__class__.from_dict(cfg.to_dict())
    c2.hidden_size, c2.intermediate_size = H2, cfg.intermediate_size + pad_ffn
    c2.rms_norm_eps = cfg.rms_norm_eps * Hd / H2
    m2 = AutoModelForCausalLM.from_config(c2)
    missing, unexpected = m2.load_state_dict(new, strict=False)
    assert not [k for k in missing if k != "lm_head.weight"] and not unexpected, (missing, unexpected)
    m2.tie_weights()
    m2.save_pretrained(out)
    import json

    (Path(out) / "reparam_maps.json").write_text(json.dumps(maps))
    return Path(out)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits


def with_adapter(model_dir, adapter_dir):
    from peft import PeftModel

    return PeftModel.from_pretrained(load(model_dir), str(adapter_dir)).eval()


def calib(n_seq=24, L=48, vocab=64, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n_seq, L), generator=g).tolist()


SPECIALS = ["<pad>", "<eos>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 :=?.")


def tokenizer():
    """A character-level fast tokenizer (43 ids) shared by every tiny model."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.add_special_tokens(SPECIALS)
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def save_tokenizer(*dirs):
    t = tokenizer()
    for d in dirs:
        t.save_pretrained(d)


def generic_texts(n=40, seed=3):
    import random

    rng = random.Random(seed)
    # generic text must cover the characters prompts use: ridge maps are zero outside the calibration span
    return ["".join(rng.choice(CHARS) for _ in range(rng.randint(10, 30))) + "." for _ in range(n)]
