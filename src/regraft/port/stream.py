"""Layer-streamed models for the transfer methods: weights are read layer by layer from safetensors.

`WeightReader` reads single tensors from a model folder's safetensors files (single file or sharded index) with
plain positioned reads (no mmap: mapped pages would count in the process's resident set and grow with every layer
touched). `StreamedModel` is the model's skeleton on the ``meta`` device (no memory; it gives the right transformers
classes, config and attention implementation) plus that reader: `layer(i)` materialises decoder layer ``i`` (its
own class, e.g. Qwen2DecoderLayer / Qwen3DecoderLayer / Qwen3MoeDecoderLayer) with its weights, `drop(i)` frees it.

`forward_layers` embeds a batch of token sequences once, then runs every decoder layer over all of them (loading the
layer, running it, freeing it), with the model's own rotary embedding class and causal masks, exactly as the
model's forward does (same modules, same order of operations: the tests compare with the whole model, allclose).
Peak memory: one decoder layer + the hidden states of the batch (+ whatever the per-layer callback keeps).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
       "BOOL": torch.bool}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


class WeightReader:
    """name -> tensor, read on demand from the safetensors of a model folder (positioned reads, no mmap)."""

    def __init__(self, folder):
        folder = Path(folder)
        idx = folder / "model.safetensors.index.json"
        files = sorted(set(json.loads(idx.read_text())["weight_map"].values())) if idx.is_file() else [
            "model.safetensors"]
        self.meta: dict[str, tuple] = {}
        for fn in files:
            p = folder / fn
            with open(p, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                head = json.loads(fh.read(n))
            base = 8 + n
            for name, info in head.items():
                if name == "__metadata__":
                    continue
                a, b = info["data_offsets"]
                self.meta[name] = (str(p), info["dtype"], tuple(info["shape"]), base + a, b - a)
        self.by_layer: dict[int, list[str]] = {}
        for name in self.meta:
            m = _LAYER.match(name)
            if m:
                self.by_layer.setdefault(int(m.group(1)), []).append(name)

    def __contains__(self, name) -> bool:
        return name in self.meta

    def get(self, name: str, dtype=torch.float32, dev=None) -> torch.Tensor:
        path, dt, shape, start, nbytes = self.meta[name]
        buf = bytearray(nbytes)
        fd = os.open(path, os.O_RDONLY)
        try:
            view, off = memoryview(buf), 0
            while off < nbytes:
                k = os.preadv(fd, [view[off:]], start + off)
                if k <= 0:
                    raise OSError(f"short read of {name} in {path}")
                off += k
        finally:
            os.close(fd)
        t = torch.frombuffer(buf, dtype=_DT[dt]) if nbytes else torch.empty(0, dtype=_DT[dt])
        t = t.reshape(shape)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.to(dev) if dev is not None else t

    def layer_state(self, i: int, dtype=torch.float32, dev=None) -> dict:
        p = f"model.layers.{i}."
        return {k[len(p):]: self.get(k, dtype, dev) for k in self.by_layer.get(i, [])}


_EXPERT = re.compile(r"^(.*experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def _fuse_experts(sd: dict, layer) -> dict:
    """Per-expert checkpoint tensors (``mlp.experts.{e}.gate_proj.weight`` ...) -> the fused parameters that
    transformers 5 expert modules hold (``experts.gate_up_proj`` E x 2I x H = [gate; up], ``experts.down_proj``
    E x H x I), as its loading-time weight conversion does. A no-op for dense layers or already fused files."""
    per: dict[str, dict] = {}
    for k in [k for k in sd if _EXPERT.match(k)]:
        pre, e, role = _EXPERT.match(k).groups()
        per.setdefault(pre, {}).setdefault(role, {})[int(e)] = sd.pop(k)
    names = {n for n, _ in layer.named_parameters()}
    for pre, roles in per.items():
        n_e = len(roles.get("down_proj", {}))
        if f"{pre}.gate_up_proj" in names:
            sd[f"{pre}.gate_up_proj"] = torch.stack([torch.cat([roles["gate_proj"][e], roles["up_proj"][e]], 0)
                                                     for e in range(n_e)])
            sd[f"{pre}.down_proj"] = torch.stack([roles["down_proj"][e] for e in range(n_e)])
        else:  # an expert module list: keep the per-expert names
            for role, by_e in roles.items():
                for e, t in by_e.items():
                    sd[f"{pre}.{e}.{role}.weight"] = t
    return sd


class StreamedModel:
    """A causal LM whose decoder layers are materialised one at a time from its safetensors."""

    def __init__(self, folder, dev=None):
        from transformers import AutoConfig, AutoModelForCausalLM

        from regraft.port.models import device

        self.path = Path(folder)
        self.dev = dev or device()
        cfg = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            self.skel = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        self.config = self.skel.config
        self.w = WeightReader(folder)
        self.rotary = type(self.skel.model.rotary_emb)(config=self.config).to(self.dev)
        self.n_layers = self.config.num_hidden_layers
        self._cache: dict[str, torch.Tensor] = {}

    # --- the pieces outside the decoder layers
    def named_modules(self):
        return self.skel.named_modules()

    def embedding(self) -> torch.Tensor:
        """Input embedding matrix (V x H, float32, on the device); read once and cached (it is not a layer)."""
        if "embed" not in self._cache:
            self._cache["embed"] = self.w.get("model.embed_tokens.weight", dev=self.dev)
        return self._cache["embed"]

    def lm_head(self) -> torch.Tensor:
        if "lm_head.weight" in self.w and not getattr(self.config, "tie_word_embeddings", False):
            if "head" not in self._cache:
                self._cache["head"] = self.w.get("lm_head.weight", dev=self.dev)
            return self._cache["head"]
        return self.embedding()

    def final_norm(self):
        if "norm" not in self._cache:
            n = self.skel.model.norm
            n.load_state_dict({"weight": self.w.get("model.norm.weight", dev=self.dev)}, assign=True)
            self._cache["norm"] = n
        return self._cache["norm"]

    def free(self) -> None:
        """Drop the cached embedding / head / norm (the skeleton stays on meta)."""
        if "norm" in self._cache:
            self.skel.model.norm.to("meta")
        self._cache.clear()

    def norm_gain(self, i: int, name: str) -> torch.Tensor:
        return self.w.get(f"model.layers.{i}.{name}.weight")

    # --- decoder layers
    def layer(self, i: int):
        lay = self.skel.model.layers[i]
        sd = _fuse_experts(self.w.layer_state(i, dev=self.dev), lay)
        missing, unexpected = lay.load_state_dict(sd, strict=False, assign=True)  # the read tensors, no copy
        left = [n for n, t in list(lay.named_parameters()) + list(lay.named_buffers()) if t.is_meta]
        if missing or unexpected or left:
            raise ValueError(f"layer {i} of {self.path}: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                             f"not materialised {left[:4]}")
        return lay.eval()

    def drop(self, i: int) -> None:
        self.skel.model.layers[i].to("meta")

    # --- forward pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids.to(self.dev), self.embedding(),
                                             getattr(self.config, "pad_token_id", None))

    def masks(self, h: torch.Tensor, pos: torch.Tensor, attention_mask=None) -> dict:
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        kw = {"config": self.config, "inputs_embeds": h, "attention_mask": attention_mask, "cache": None,
              "position_ids": pos}
        out = {"full_attention": create_causal_mask(**kw)}
        if "sliding_attention" in (getattr(self.config, "layer_types", None) or []):
            out["sliding_attention"] = create_sliding_window_causal_mask(**kw)
        return out

    def layer_type(self, i: int) -> str:
        lt = getattr(self.config, "layer_types", None)
        return lt[i] if lt else "full_attention"


def forward_layers(sm: StreamedModel, seqs, on_layer=None, attention_masks=None, prog=None, desc="layers",
                   before_layer=None, after_layer=None):
    """Run every decoder layer of ``sm`` over the token sequences ``seqs`` (lists of ids, or 1 x L / B x L
    tensors), one layer in memory at a time; return the final hidden states (before the final norm), one tensor
    per sequence. ``on_layer(i, layer, k, h_in, h_out)`` is called for each layer and sequence (for captures);
    ``before_layer(i, layer)`` / ``after_layer(i, layer)`` around each layer (hooks)."""
    hs, pes, masks = [], [], []
    with torch.no_grad():
        for k, s in enumerate(seqs):
            ids = s if isinstance(s, torch.Tensor) else torch.tensor([s])
            ids = ids.to(sm.dev)
            h = sm.embed(ids)
            pos = torch.arange(ids.shape[1], device=sm.dev).unsqueeze(0)
            am = None if attention_masks is None else attention_masks[k].to(sm.dev)
            hs.append(h)
            pes.append((pos, sm.rotary(h, pos)))
            masks.append(sm.masks(h, pos, am))
        task = prog.add_task(desc, total=sm.n_layers) if prog is not None else None
        for i in range(sm.n_layers):
            lay = sm.layer(i)
            try:
                if before_layer is not None:
                    before_layer(i, lay)
                lt = sm.layer_type(i)
                for k in range(len(hs)):
                    pos, pe = pes[k]
                    out = lay(hs[k], attention_mask=masks[k][lt], position_embeddings=pe, position_ids=pos)
                    out = out[0] if isinstance(out, tuple) else out
                    if on_layer is not None:
                        on_layer(i, lay, k, hs[k], out)
                    hs[k] = out
                if after_layer is not None:
                    after_layer(i, lay)
            finally:
                sm.drop(i)
            if task is not None:
                prog.update(task, advance=1)
    return hs


# --------------------------------------------------------------------------- LoRA deltas as forward hooks
def lora_hooks(layer, factors: dict, gamma: float = 1.0):
    """Add ``gamma * scale * (x A^T) B^T`` to the outputs of this layer's Linear modules, as PEFT's LoRA forward
    does (dropout 0). ``factors``: path inside the layer (e.g. "self_attn.q_proj") -> (A, B, scale) as tensors.
    ``gamma``: a number, or a callable returning the factor for the sequence being run. Returns the hook handles."""
    hs = []
    for path, (A, B, s) in factors.items():
        mod = layer.get_submodule(path)
        A = A.to(next(mod.parameters()).device, torch.float32)
        B = B.to(A.device, torch.float32)
        fixed = None if callable(gamma) else (B * gamma if gamma != 1.0 else B)

        def h(m, args, out, A=A, B=B, s=s, fixed=fixed):
            x = args[0]
            if fixed is None:
                g = gamma()
                Bg = B * g if g != 1.0 else B
            else:
                Bg = fixed
            return out + torch.nn.functional.linear(torch.nn.functional.linear(x, A), Bg) * s

        hs.append(mod.register_forward_hook(h))
    return hs


def adapter_layer_factors(adapter_dir) -> tuple[dict[int, dict], list[str]]:
    """layer -> {path inside the layer: (A, B, scale)} for every LoRA module of a PEFT adapter that sits in a
    decoder layer; the second value lists modules that cannot be applied as a streamed hook (not in a layer,
    DoRA, ...): callers fall back to the whole model when it is not empty."""
    from safetensors import safe_open

    from regraft.inspection.adapter import read_adapter

    spec = read_adapter(adapter_dir)
    out: dict[int, dict] = {}
    bad = []
    if not spec.weights_file.endswith(".safetensors") or spec.use_dora:
        return {}, ["adapter weights are not plain LoRA safetensors"]
    with safe_open(str(Path(spec.path) / spec.weights_file), framework="pt") as f:
        for m in spec.modules:
            mm = re.match(r"^(?:.*\.)?layers\.(\d+)\.(.+)$", m.module)
            if m.kind != "lora" or mm is None or m.a is None or m.b is None or m.expert is not None:
                bad.append(m.module)
                continue
            out.setdefault(int(mm.group(1)), {})[mm.group(2)] = (f.get_tensor(m.a.name).float().clone(),
                                                                  f.get_tensor(m.b.name).float().clone(),
                                                                  float(spec.scale(m.module)))
    return out, bad


def streamed_final(sm: StreamedModel, hs: list) -> list:
    """log-softmax of the logits from final hidden states (final norm, then the head), float32, on the CPU."""
    norm, head = sm.final_norm(), sm.lm_head()
    with torch.no_grad():
        return [torch.log_softmax(torch.nn.functional.linear(norm(h), head)[0].float(), -1).cpu() for h in hs]
