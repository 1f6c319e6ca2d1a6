"""Function-preserving rewrites of a dense Qwen2/Qwen3 model (ground truth for projection tests).

`reparametrise` applies, all at once and exactly:
* a permutation of the residual (hidden) dimensions, plus zero padding of the width;
* a permutation of the KV groups and of the query heads inside each group (whole heads, so RoPE and
  Qwen3's per-head q/k norms are untouched), plus extra zero-output query heads per group;
* a permutation of the FFN neurons of each layer, plus zero padding of the FFN;
* inserted identity layers (copies of a neighbour with o_proj and down_proj zeroed).

RMSNorm stays exact under width padding by scaling its weights by sqrt(H/H') and eps by H/H'.
Maps use the convention ``new[j] = old[map[j]]`` with ``-1`` for padded (new) entries.
"""

from __future__ import annotations

import math

import torch


def _take(w: torch.Tensor, idx: list[int], dim: int, fill: float = 0.0) -> torch.Tensor:
    """Index ``w`` along ``dim`` with ``idx`` (``-1`` -> a slice of ``fill``)."""
    shape = list(w.shape)
    shape[dim] = len(idx)
    out = torch.full(shape, fill, dtype=w.dtype)
    src = [i for i in idx if i >= 0]
    dst = [j for j, i in enumerate(idx) if i >= 0]
    out.index_copy_(dim, torch.tensor(dst, dtype=torch.long), w.index_select(dim, torch.tensor(src, dtype=torch.long)))
    return out


def _blocks(idx_heads: list[int], hd: int) -> list[int]:
    return [h * hd + d if h >= 0 else -1 for h in idx_heads for d in range(hd)]


def random_maps(config, *, seed: int, pad_hidden: int = 0, pad_ffn: int = 0, extra_heads_per_group: int = 0,
                permute: bool = True, insert_identity_after: tuple = ()) -> dict:
    """Random maps for `reparametrise` (seeded). Padded slots are placed at random positions."""
    g = torch.Generator().manual_seed(seed)

    def perm_with_pad(n_old: int, n_pad: int) -> list[int]:
        base = list(range(n_old)) + [-1] * n_pad
        if not permute:
            return base
        return [base[i] for i in torch.randperm(len(base), generator=g).tolist()]

    H, L = config.hidden_size, config.num_hidden_layers
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    rep = nh // nkv
    layers = []
    for _ in range(L):
        groups = perm_with_pad(nkv, 0)
        within = [perm_with_pad(rep, extra_heads_per_group) for _ in range(nkv)]
        layers.append({"kv_groups": groups, "q_within_group": within,
                       "ffn": perm_with_pad(config.intermediate_size, pad_ffn)})
    return {"hidden": perm_with_pad(H, pad_hidden), "layers": layers,
            "insert_identity_after": list(insert_identity_after)}


def reparametrise(model, maps: dict, noise: float = 0.0, seed: int = 0):
    """A new model computing the same function as ``model`` (exactly when ``noise`` = 0).

    ``noise`` > 0 fills the padded/zeroed slots with N(0, noise) instead of zeros, so that growth
    ("lineage upgrade") can train the new dimensions; the function then changes by O(noise).
    """
    from transformers import AutoModelForCausalLM

    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    H, hd = cfg.hidden_size, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    nkv = cfg.num_key_value_heads
    rep = cfg.num_attention_heads // nkv
    hid = maps["hidden"]
    H2 = len(hid)
    scale = math.sqrt(H / H2)
    gen = torch.Generator().manual_seed(seed)

    def fill(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if noise > 0:
            t = t + mask * noise * torch.randn(t.shape, generator=gen)
        return t

    def padmask(idx, dim, shape):
        m = torch.tensor([1.0 if i < 0 else 0.0 for i in idx])
        view = [1] * len(shape)
        view[dim] = len(idx)
        return m.view(view).expand(shape)

    new_layers = []
    for li, lm in enumerate(maps["layers"]):
        p = f"model.layers.{li}."
        groups, within = lm["kv_groups"], lm["q_within_group"]
        rep2 = len(within[0])
        q_heads = []
        for gi, g_old in enumerate(groups):
            q_heads += [g_old * rep + r if r >= 0 else -1 for r in within[gi]]
        qi, kvi, fi = _blocks(q_heads, hd), _blocks(groups, hd), lm["ffn"]
        L = {}
        for name in ("input_layernorm", "post_attention_layernorm"):
            L[name + ".weight"] = _take(sd[p + name + ".weight"], hid, 0, fill=1.0) * scale
        for name, rows in (("q_proj", qi), ("k_proj", kvi), ("v_proj", kvi)):
            w = _take(_take(sd[f"{p}self_attn.{name}.weight"], rows, 0), hid, 1)
            L[f"self_attn.{name}.weight"] = fill(w, padmask(rows, 0, w.shape).maximum(padmask(hid, 1, w.shape)))
            if f"{p}self_attn.{name}.bias" in sd:
                L[f"self_attn.{name}.bias"] = _take(sd[f"{p}self_attn.{name}.bias"], rows, 0)
        for name in ("q_norm", "k_norm"):
            if f"{p}self_attn.{name}.weight" in sd:
                L[f"self_attn.{name}.weight"] = sd[f"{p}self_attn.{name}.weight"].clone()
        w = _take(_take(sd[f"{p}self_attn.o_proj.weight"], hid, 0), qi, 1)
        L["self_attn.o_proj.weight"] = fill(w, padmask(hid, 0, w.shape).maximum(padmask(qi, 1, w.shape)))
        for name in ("gate_proj", "up_proj"):
            w = _take(_take(sd[f"{p}mlp.{name}.weight"], fi, 0), hid, 1)
            L[f"mlp.{name}.weight"] = fill(w, padmask(fi, 0, w.shape).maximum(padmask(hid, 1, w.shape)))
        w = _take(_take(sd[f"{p}mlp.down_proj.weight"], hid, 0), fi, 1)
        L["mlp.down_proj.weight"] = fill(w, padmask(hid, 0, w.shape).maximum(padmask(fi, 1, w.shape)))
        new_layers.append(L)
        if li in maps.get("insert_identity_after", []):
            ident = {k: v.clone() for k, v in L.items()}
            ident["self_attn.o_proj.weight"] = fill(torch.zeros_like(L["self_attn.o_proj.weight"]),
                                                    torch.ones_like(L["self_attn.o_proj.weight"]))
            ident["mlp.down_proj.weight"] = fill(torch.zeros_like(L["mlp.down_proj.weight"]),
                                                 torch.ones_like(L["mlp.down_proj.weight"]))
            new_layers.append(ident)

    out = {}
    emb = _take(sd["model.embed_tokens.weight"], hid, 1)
    out["model.embed_tokens.weight"] = fill(emb, padmask(hid, 1, emb.shape))
    out["model.norm.weight"] = _take(sd["model.norm.weight"], hid, 0, fill=1.0) * scale
    for i, L in enumerate(new_layers):
        for k, v in L.items():
            out[f"model.layers.{i}.{k}"] = v
    if "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        out["lm_head.weight"] = _take(sd["lm_head.weight"], hid, 1)

    new_cfg = cfg.__class__.from_dict(cfg.to_dict())
    new_cfg.hidden_size = H2
    new_cfg.num_attention_heads = len(maps["layers"][0]["kv_groups"]) * rep2
    new_cfg.intermediate_size = len(maps["layers"][0]["ffn"])
    new_cfg.num_hidden_layers = len(new_layers)
    new_cfg.head_dim = hd
    new_cfg.rms_norm_eps = cfg.rms_norm_eps * H / H2
    if getattr(new_cfg, "layer_types", None) is not None:
        new_cfg.layer_types = [new_cfg.layer_types[0]] * len(new_layers)
    new = AutoModelForCausalLM.from_config(new_cfg, dtype=torch.float32)
    missing, unexpected = new.load_state_dict(out, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"reparametrise: missing {missing} unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        new.tie_weights()
    return new.eval()
