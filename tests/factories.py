"""The one set of test factories for tiny real models and adapters (built at test time, seeded, no downloads).

* from the catalog's own configs, shrunk (``tiny_config``, ``build_model``, ``build_adapter``, ``set_base``): the
  inspection / check / oracle tests;
* the port, verify and drift world (``make_model`` qwen3 by default, ``sibling_of``, ``peft_adapter``,
  ``v4_moe_adapter``, ``tiny_world`` behind the session fixture ``tiny``; ``peft_logits`` / ``merged_logits``);
* across shapes (``make_dense`` with larger weights so layers do something measurable, ``reparametrise``: an exact
  reparametrisation, ``random_adapter``, a tokenizer and generic texts): the project / distill / auto tests.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

from regraft import catalog

try:  # the catalog factories run without torch
    import torch
except ImportError:  # pragma: no cover
    torch = None


# -- from the catalog --------------------------------------------------------------------------------------------

TINY = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
            moe_intermediate_size=16, shared_expert_intermediate_size=16, num_experts=4, num_local_experts=4, num_experts_per_tok=2,
            vocab_size=128, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
            linear_value_head_dim=8, max_window_layers=2)


def tiny_config(model_id: str, layers: int = 2, **over) -> dict:
    """A catalog config shrunk to test size, keeping its structure (model_type, MoE, hybrid layers, ties)."""
    entry = {k: v for k, v in catalog.model_entry(model_id).items() if not k.startswith("_")}
    cfg = copy.deepcopy(entry)
    root = cfg["text_config"] if "text_config" in cfg else cfg
    layers = max(layers, root.get("full_attention_interval") or 0)
    for k, v in TINY.items():
        if k in root or k in ("head_dim",):
            root[k] = v
    if root.get("num_key_value_heads") == root.get("num_attention_heads"):
        root["num_key_value_heads"] = TINY["num_attention_heads"]
    root["num_hidden_layers"] = layers
    if isinstance(root.get("layer_types"), list):
        root["layer_types"] = root["layer_types"][:layers]
    for k in ("mlp_only_layers",):
        if root.get(k):
            root[k] = [x for x in root[k] if x < layers]
    root.update(over)
    return cfg


def build_model(tmp: Path, config: dict, seed: int = 0, meta: bool = False):
    """Instantiate (and save, unless meta) a transformers model for ``config``; returns (model, folder)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg), None
    model = AutoModelForCausalLM.from_config(cfg)
    folder = Path(tmp)
    model.save_pretrained(folder)
    return model, folder


def build_adapter(folder: Path, model, seed: int = 1, **lora_kwargs) -> Path:
    """A PEFT LoRA on ``model`` with non-zero B (so it has an effect), saved to ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora_kwargs.setdefault("task_type", "CAUSAL_LM")
    pm = get_peft_model(copy.deepcopy(model), LoraConfig(**lora_kwargs))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_embedding_B" in n:
                p.normal_(0, 0.1)
    pm.save_pretrained(folder)
    return Path(folder)


def set_base(adapter_dir: Path, base: str) -> None:
    p = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg["base_model_name_or_path"] = base
    p.write_text(json.dumps(cfg))


# -- the port / verify / drift world -----------------------------------------------------------------------------

DENSE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
MOE = dict(DENSE, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def make_model(path: Path, model_type: str = "qwen3", seed: int = 0, **over) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    base = MOE if model_type == "qwen3_moe" else DENSE
    cfg = AutoConfig.for_model(model_type, **{**base, **over})
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(cfg)
    m.save_pretrained(path)
    return Path(path)


def sibling_of(src: Path, dst: Path, noise: float = 0.02, seed: int = 1) -> Path:
    """A copy of ``src`` with every weight perturbed by ``noise`` relative (a stand-in for post-training)."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std().clamp_min(1e-3))
    m.save_pretrained(dst)
    return Path(dst)


def peft_adapter(model_dir: Path, out: Path, targets=None, r=4, alpha=8, seed=0, **kw) -> Path:
    """A PEFT LoRA saved by PEFT itself, with non-zero random B so every tensor matters."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    m = load(model_dir)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or ATTN + MLP, lora_dropout=0.0, **kw)
    pm = get_peft_model(m, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.3)
    pm.save_pretrained(out)
    return Path(out)


def v4_moe_adapter(model_dir: Path, out: Path, r=2, alpha=4, seed=0, attn=True, layers=None,
                   extra: dict | None = None) -> Path:
    """A transformers-4 style per-expert MoE adapter (keys mlp.experts.E.{gate,up,down}_proj), written by hand."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    H, I, E = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg.get("num_experts") or cfg["num_local_experts"]
    L = layers if layers is not None else cfg["num_hidden_layers"]
    nq, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    P = "base_model.model.model.layers"

    def pair(name, out_f, in_f):
        sd[f"{name}.lora_A.weight"] = torch.randn(r, in_f, generator=g) * 0.3
        sd[f"{name}.lora_B.weight"] = torch.randn(out_f, r, generator=g) * 0.3

    for li in range(L):
        for e in range(E):
            pair(f"{P}.{li}.mlp.experts.{e}.gate_proj", I, H)
            pair(f"{P}.{li}.mlp.experts.{e}.up_proj", I, H)
            pair(f"{P}.{li}.mlp.experts.{e}.down_proj", H, I)
        if attn:
            pair(f"{P}.{li}.self_attn.q_proj", nq * hd, H)
            pair(f"{P}.{li}.self_attn.v_proj", nkv * hd, H)
    os.makedirs(out, exist_ok=True)
    save_file(sd, str(Path(out) / "adapter_model.safetensors"))
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
            "target_modules": MLP + (["q_proj", "v_proj"] if attn else []), "base_model_name_or_path": str(model_dir),
            "bias": "none", "use_rslora": False, "use_dora": False}
    conf.update(extra or {})
    (Path(out) / "adapter_config.json").write_text(json.dumps(conf))
    return Path(out)


def ids(vocab=128, n=3, length=12, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g)


def peft_logits(model_dir, adapter_dir, x):
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(load(model_dir), str(adapter_dir))
    pm.eval()
    with torch.no_grad():
        return pm(input_ids=x).logits


def merged_logits(model_dir, adapter_dir, x):
    """Reference: merge s*B@A into the base weights by hand from the adapter files (per-expert or fused)."""
    import torch
    from regraft.inspection.adapter import read_adapter
    from regraft.port.items import items_from_spec
    from regraft.port import relayout

    spec = read_adapter(adapter_dir)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    items = relayout.to_v4(items_from_spec(spec), cfg.get("num_experts") or cfg.get("num_local_experts") or 1, cfg.get("moe_intermediate_size"))
    m = load(model_dir)
    sd = m.state_dict()
    I = cfg.get("moe_intermediate_size")
    with torch.no_grad():
        for it in items:
            if it.kind != "lora":
                continue
            d = it.delta()
            if it.expert is not None:
                layer_key = it.module.rsplit(".experts.", 1)[0] + ".experts"
                proj = it.leaf
                if proj in ("gate_proj", "up_proj"):
                    w = sd[layer_key + ".gate_up_proj"]
                    sl = slice(0, I) if proj == "gate_proj" else slice(I, 2 * I)
                    w[it.expert, sl] += d
                else:
                    sd[layer_key + ".down_proj"][it.expert] += d
            else:
                sd[it.module + ".weight"] += d
        m.eval()
        return m(input_ids=x).logits


def tiny_world(d: Path) -> dict:
    """dense (qwen3), its sibling, an unrelated dense model, a MoE (qwen3_moe) model and adapters for them.

    Shared by the session fixture ``tiny`` of tests/port, tests/verify and tests/drift.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"dir": d}
        out["dense"] = make_model(d / "dense", "qwen3", seed=0)
        out["sib"] = sibling_of(out["dense"], d / "dense-sib")
        out["other"] = make_model(d / "other", "qwen3", seed=7)
        out["moe"] = make_model(d / "moe", "qwen3_moe", seed=0)
        out["lora"] = peft_adapter(out["dense"], d / "lora")
        out["v4"] = v4_moe_adapter(out["moe"], d / "v4")
    return out


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


# -- across shapes -----------------------------------------------------------------------------------------------

DENSE_ACROSS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=8, vocab_size=64, max_position_embeddings=64, tie_word_embeddings=True, rms_norm_eps=1e-6)


def make_dense(path: Path, model_type: str = "qwen2", seed: int = 0, **over) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, **{**DENSE_ACROSS, **over})
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


def random_adapter(model_dir: Path, out: Path, targets=None, r=4, alpha=8, seed=0, std=0.3, **kw) -> Path:
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
