"""``project``: training-free, rank-preserving projection of a LoRA onto a model of other shapes.

docs/transfer.md, "project". For every target layer j matched to a source layer i (CKA on paired activations of
generic calibration text + order-preserving alignment), every adapter module is moved with

    B_t = R_out^T B_s,   A_t = A_s Q_in^T        (x_s ~= Q_in^T x_t,  y_t ~= R_out^T y_s)

so the rank never grows. Maps are ridge fits on paired module inputs/outputs (same token stream in both models):
residual sides (q/k/v/gate/up inputs, o/down outputs) by a full map; q/k/v outputs and o inputs head by head after a
GQA-aware Hungarian head matching, with q/k maps restricted to commute with RoPE (2x2 blocks per rotary pair);
MLP neurons by ridge maps (or skipped with ``mlp="skip"``). Then per-module scale calibration and a global gain
search (KL to source+adapter on the calibration text, same vocabulary only).

Without calibration text, a weight-only fallback pushes the shared token embeddings through each layer's weights
(no attention mixing) to get paired activations, and layers are matched by relative depth; it is flagged.

The result is an initialiser for ``distill``: it is never reported as a success by itself. On exact
reparametrisations of the source (permuted/padded, the Pk zoo member) it recovers the function.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from regraft.port import heads as H
from regraft.port.factors import module_name, read_factors, write_lora
from regraft.port.layer_match import align_layers, cka_matrix, depth_similarity
from regraft.port.linalg import map_factors, neuron_permutation, procrustes, r2, ridge
from regraft.port.memory import PhaseMemory, peak_rss_mb, reset_peak_rss
from regraft.port.models import load_model, load_tokenizer, progress
from regraft.port.result import MethodReport

GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- calibration tokens
def calib_ids(calib, tok_s, tok_t, max_tokens: int = 4096, seq_len: int = 64) -> tuple[list, list, str]:
    """Paired token sequences for both models. ``calib``: texts, or lists of token ids (shared vocabulary).

    Same tokenizer (same vocabulary) -> identical ids, packed into ``seq_len`` chunks. Different tokenizers ->
    per-text sequences; positions are paired on shared token boundaries (character offsets) by `paired_positions`.
    Returns (seqs_s, seqs_t, mode)."""
    if calib and not isinstance(calib[0], str):
        flat = [int(t) for s in calib for t in s][:max_tokens]
        seqs = [flat[i:i + seq_len] for i in range(0, len(flat), seq_len)]
        seqs = [s for s in seqs if len(s) > 1]
        return seqs, seqs, "ids"
    if tok_s is None or tok_t is None:
        from regraft.errors import InputError

        raise InputError("calibration text needs tokenizers in both model folders (or pass token ids)")
    if tok_s.get_vocab() == tok_t.get_vocab():
        flat = []
        for t in calib:
            flat += tok_s(t, add_special_tokens=False)["input_ids"]
            if len(flat) >= max_tokens:
                break
        flat = flat[:max_tokens]
        seqs = [flat[i:i + seq_len] for i in range(0, len(flat), seq_len)]
        seqs = [s for s in seqs if len(s) > 1]
        return seqs, seqs, "shared-vocab"
    ss, tt, n = [], [], 0
    for t in calib:
        a = tok_s(t, add_special_tokens=False, return_offsets_mapping=True)
        b = tok_t(t, add_special_tokens=False, return_offsets_mapping=True)
        ss.append((a["input_ids"][:seq_len], a["offset_mapping"][:seq_len]))
        tt.append((b["input_ids"][:seq_len], b["offset_mapping"][:seq_len]))
        n += len(a["input_ids"])
        if n >= max_tokens:
            break
    return ss, tt, "span-aligned"


def paired_positions(off_s, off_t) -> tuple[list[int], list[int]]:
    """Positions whose token ends at the same character in both tokenisations (two-pointer, TiTok-style)."""
    ends_t = {int(e): j for j, (_, e) in enumerate(off_t)}
    ps, pt = [], []
    for i, (_, e) in enumerate(off_s):
        j = ends_t.get(int(e))
        if j is not None:
            ps.append(i)
            pt.append(j)
    return ps, pt


# --------------------------------------------------------------------------- activation capture
def _arch(model) -> dict:
    """Shapes of a model (a loaded model or a `StreamedModel`: its meta skeleton has the same modules)."""
    c = model.config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    moe = any("experts" in n for n, _ in model.named_modules())
    return {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "nq": c.num_attention_heads,
            "nkv": c.num_key_value_heads, "hd": hd, "moe": moe, "vocab": c.vocab_size,
            "rope_theta": (getattr(c, "rope_parameters", None) or {}).get("rope_theta",
                                                                              getattr(c, "rope_theta", None))}


def _bias(mod):
    b = getattr(mod, "bias", None)
    return None if b is None else b.detach().double().cpu().numpy()


def capture(model, seqs, positions=None, with_mlp: bool = True, prog=None, desc: str = "capture") -> dict:
    """Run ``model`` on token sequences and collect, per layer, the decoder-layer input/output and each
    projection's input and (bias-free) output, as float64 arrays of the selected token rows."""
    import torch

    arch = _arch(model)
    names = {}
    for i in range(arch["layers"]):
        for role in ATTN + (MLP if with_mlp and not arch["moe"] else ()):
            names[module_name(i, role)] = (i, role)
    store: dict = {}
    sel = {"rows": None}

    def keep(key, t):
        t = t.detach().reshape(-1, t.shape[-1])
        if sel["rows"] is not None:
            t = t[sel["rows"]]
        store.setdefault(key, []).append(t.double().cpu())

    hooks = []
    for name, (i, role) in names.items():
        mod = model.get_submodule(name)

        def h(m, args, out, i=i, role=role):
            keep((i, role, "in"), args[0])
            keep((i, role, "out"), out)

        hooks.append(mod.register_forward_hook(h))
    for i, layer in enumerate(model.model.layers):
        def hl(m, args, kwargs, out, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            keep((i, "layer", "in"), x)
            keep((i, "layer", "out"), out[0] if isinstance(out, tuple) else out)

        hooks.append(layer.register_forward_hook(hl, with_kwargs=True))
    task = prog.add_task(desc, total=len(seqs)) if prog is not None else None
    try:
        with torch.no_grad():
            for k, s in enumerate(seqs):
                ids = torch.tensor([s], device=model.device)
                sel["rows"] = None if positions is None else torch.tensor(positions[k], dtype=torch.long)
                model(input_ids=ids)
                if task is not None:
                    prog.update(task, advance=1)
    finally:
        for h in hooks:
            h.remove()
    acts = {k: torch.cat(v).numpy() for k, v in store.items()}
    for name, (i, role) in names.items():
        b = _bias(model.get_submodule(name))
        if b is not None:
            acts[(i, role, "out")] = acts[(i, role, "out")] - b
    return acts


def capture_streamed(sm, seqs, positions=None, with_mlp: bool = True, prog=None, desc: str = "capture") -> dict:
    """`capture` with one decoder layer in memory at a time (`stream.forward_layers`): the same hooks, the same
    rows, the same arrays (the tests compare both, allclose)."""
    import torch

    from regraft.port.stream import forward_layers

    arch = _arch(sm)
    roles = ATTN + (MLP if with_mlp and not arch["moe"] else ())
    store: dict = {}
    state = {"k": 0, "hooks": []}

    def keep(key, t, k):
        t = t.detach().reshape(-1, t.shape[-1])
        if positions is not None:
            t = t[torch.tensor(positions[k], dtype=torch.long, device=t.device)]
        store.setdefault(key, []).append(t.double().cpu())

    def before(i, layer):
        state["k"] = 0
        for role in roles:
            mod = layer.get_submodule(("self_attn." if role in ATTN else "mlp.") + role)

            def h(m, args, out, i=i, role=role):
                keep((i, role, "in"), args[0], state["k"])
                keep((i, role, "out"), out, state["k"])

            state["hooks"].append(mod.register_forward_hook(h))

    def on_layer(i, layer, k, h_in, h_out):
        keep((i, "layer", "in"), h_in, k)
        keep((i, "layer", "out"), h_out, k)
        state["k"] = k + 1

    def after(i, layer):
        for hk in state["hooks"]:
            hk.remove()
        state["hooks"] = []
        for role in roles:
            b = _bias(layer.get_submodule(("self_attn." if role in ATTN else "mlp.") + role))
            if b is not None:
                store[(i, role, "out_bias")] = b

    forward_layers(sm, seqs, on_layer, prog=prog, desc=desc, before_layer=before, after_layer=after)
    acts = {k: torch.cat(v).numpy() for k, v in store.items() if k[2] != "out_bias"}
    for (i, role, io), b in [(k, v) for k, v in store.items() if k[2] == "out_bias"]:
        acts[(i, role, "out")] = acts[(i, role, "out")] - b
    return acts


class LazyActs:
    """The activations dict of `capture` / `weight_only_acts`, computed one layer at a time from a `StreamedModel`.

    Calibration mode: one streamed pass keeps each layer's input hidden states (all positions, float32: needed to
    re-run a layer) and the block input/output rows (float64, for CKA). A projection key ``(i, role, io)`` loads
    layer ``i`` alone, re-runs it on its stored input with the capture hooks and caches that layer's module
    activations until `evict(i)`. Weight-only mode: every layer is applied to the token embeddings, so a layer's
    activations need that layer only. Values are those of the whole-model functions (the tests compare)."""

    def __init__(self, sm, seqs=None, positions=None, with_mlp: bool = True, prog=None, desc: str = "capture",
                 ids=None):
        import torch

        from regraft.port.stream import forward_layers

        self.sm, self.positions, self.with_mlp = sm, positions, with_mlp
        self.arch = _arch(sm)
        self.layer_acts: dict[int, dict] = {}
        self.blocks: dict = {}
        self.ids = ids
        self.n_rows = 0
        if ids is not None:
            self.n_rows = len(ids)
            return
        self.hidden: list[list] = []  # per layer: input hidden states per sequence (float32, all positions)

        def on_layer(i, layer, k, h_in, h_out):
            if k == 0:
                self.hidden.append([])
            self.hidden[i].append(h_in)
            if i == 0:
                self.blocks[(0, "layer", "in", k)] = self._rows(h_in, k)
            self.blocks[(i, "layer", "out", k)] = self._rows(h_out, k)

        forward_layers(sm, seqs, on_layer, prog=prog, desc=desc)
        n = len(seqs)
        cat = {}
        for i in range(self.arch["layers"]):
            if i == 0:
                cat[(0, "layer", "in")] = torch.cat([self.blocks.pop((0, "layer", "in", k)) for k in range(n)]).numpy()
            cat[(i, "layer", "out")] = torch.cat([self.blocks.pop((i, "layer", "out", k)) for k in range(n)]).numpy()
            if i + 1 < self.arch["layers"]:
                cat[(i + 1, "layer", "in")] = cat[(i, "layer", "out")]  # the same rows: stored once
        self.blocks = cat
        self.n_rows = cat[(0, "layer", "in")].shape[0]

    def _rows(self, t, k):
        import torch

        t = t.detach().reshape(-1, t.shape[-1])
        if self.positions is not None:
            t = t[torch.tensor(self.positions[k], dtype=torch.long, device=t.device)]
        return t.double().cpu()

    def _load(self, i: int) -> dict:
        import torch

        if i in self.layer_acts:
            return self.layer_acts[i]
        sm, arch = self.sm, self.arch
        if self.ids is not None:
            acts: dict = {}
            with torch.no_grad():
                e = sm.embedding()[torch.tensor(self.ids, device=sm.dev)].float()
                layer = sm.layer(i)
                try:
                    _weight_only_layer(layer, e, arch, self.with_mlp, i, acts, len(self.ids))
                finally:
                    sm.drop(i)
            self.layer_acts[i] = {k: v.double().cpu().numpy() for k, v in acts.items()}
            return self.layer_acts[i]
        roles = ATTN + (MLP if self.with_mlp and not arch["moe"] else ())
        store: dict = {}
        state = {"k": 0}
        layer = sm.layer(i)
        hooks = []
        try:
            for role in roles:
                mod = layer.get_submodule(("self_attn." if role in ATTN else "mlp.") + role)

                def h(m, args, out, role=role):
                    store.setdefault((i, role, "in"), []).append(self._rows(args[0], state["k"]))
                    store.setdefault((i, role, "out"), []).append(self._rows(out, state["k"]))

                hooks.append(mod.register_forward_hook(h))
            lt = sm.layer_type(i)
            with torch.no_grad():
                for k, h_in in enumerate(self.hidden[i]):
                    state["k"] = k
                    pos = torch.arange(h_in.shape[1], device=sm.dev).unsqueeze(0)
                    layer(h_in, attention_mask=sm.masks(h_in, pos)[lt], position_embeddings=sm.rotary(h_in, pos),
                          position_ids=pos)
            acts = {k: torch.cat(v).numpy() for k, v in store.items()}
            for role in roles:
                b = _bias(layer.get_submodule(("self_attn." if role in ATTN else "mlp.") + role))
                if b is not None:
                    acts[(i, role, "out")] = acts[(i, role, "out")] - b
        finally:
            for hk in hooks:
                hk.remove()
            sm.drop(i)
        self.layer_acts[i] = acts
        return acts

    def __getitem__(self, key):
        if key in self.blocks:
            return self.blocks[key]
        return self._load(key[0])[key]

    def evict(self, i: int) -> None:
        self.layer_acts.pop(i, None)

    def free(self) -> None:
        self.layer_acts.clear()
        self.blocks = {}
        self.hidden = []


def _weight_only_layer(layer, e, arch, with_mlp, i, acts, n) -> None:
    """One layer of the weight-only fallback applied to the embeddings ``e`` (see `weight_only_acts`)."""
    rep = arch["nq"] // arch["nkv"]
    at = layer.self_attn
    x = layer.input_layernorm(e)
    acts[(i, "layer", "in")] = e
    for role in ("q_proj", "k_proj", "v_proj"):
        mod = getattr(at, role)
        acts[(i, role, "in")] = x
        acts[(i, role, "out")] = x @ mod.weight.T
    v = acts[(i, "v_proj", "out")].reshape(n, arch["nkv"], arch["hd"])
    o_in = v.repeat_interleave(rep, dim=1).reshape(n, -1)
    acts[(i, "o_proj", "in")] = o_in
    acts[(i, "o_proj", "out")] = o_in @ at.o_proj.weight.T
    h = e + acts[(i, "o_proj", "out")]
    acts[(i, "layer", "out")] = h
    if with_mlp and not arch["moe"]:
        mlp = layer.mlp
        x2 = layer.post_attention_layernorm(h)
        g, u = x2 @ mlp.gate_proj.weight.T, x2 @ mlp.up_proj.weight.T
        d_in = mlp.act_fn(g) * u
        acts.update({(i, "gate_proj", "in"): x2, (i, "gate_proj", "out"): g, (i, "up_proj", "in"): x2,
                     (i, "up_proj", "out"): u, (i, "down_proj", "in"): d_in,
                     (i, "down_proj", "out"): d_in @ mlp.down_proj.weight.T})


def weight_only_acts(model, ids: list[int], with_mlp: bool = True) -> dict:
    """Fallback without calibration text: each layer applied to the token embeddings directly (no attention
    mixing: a query head's attention output is taken to be its KV group's value). Paired across models by id.
    ``model``: a loaded model or a `StreamedModel` (then one layer in memory at a time)."""
    import torch

    from regraft.port.stream import StreamedModel

    arch = _arch(model)
    acts = {}
    streamed = isinstance(model, StreamedModel)
    with torch.no_grad():
        if streamed:
            e = model.embedding()[torch.tensor(ids, device=model.dev)].float()
        else:
            e = model.get_input_embeddings().weight[torch.tensor(ids, device=model.device)].float()
        for i in range(arch["layers"]):
            layer = model.layer(i) if streamed else model.model.layers[i]
            try:
                _weight_only_layer(layer, e, arch, with_mlp, i, acts, len(ids))
                # keep float64 copies now: the layer's tensors go when it is dropped
                for k in [k for k in acts if k[0] == i]:
                    if isinstance(acts[k], torch.Tensor):
                        acts[k] = acts[k].double().cpu().numpy()
            finally:
                if streamed:
                    model.drop(i)
    return acts


# --------------------------------------------------------------------------- maps per layer pair
def layer_maps(acts_s: dict, acts_t: dict, i: int, j: int, a_s: dict, a_t: dict, roles, lam: float = 1e-6,
               rope_safe: bool = True, priors: dict | None = None, fit: str = "procrustes") -> tuple[dict, dict]:
    """Maps (q_in, r_out) per role for source layer i -> target layer j, plus a report (R^2, head matches).

    ``priors``: residual-side maps the ridge fits shrink to outside the calibration span ("attn_in", "mlp_in",
    "res_out"; see `embedding_priors`). ``fit``: "procrustes" (semi-orthogonal maps: rotations / partial
    permutations, ~ identity between siblings; the default) or "ridge" (unconstrained regressions, the pre-fix
    behaviour)."""
    priors = priors or {}
    fitm = procrustes if fit == "procrustes" else ridge
    S = lambda role, io: acts_s[(i, role, io)]
    T = lambda role, io: acts_t[(j, role, io)]
    maps, info = {}, {}
    hd_s, hd_t = a_s["hd"], a_t["hd"]
    cache = {}

    def residual_map():
        # o_proj/down_proj write into the residual stream: map it on the block input and output states (full rank;
        # the module outputs themselves span only a rank <= n_kv*head_dim or hidden subspace)
        if "res" not in cache:
            Xs = np.concatenate([S("layer", "in"), S("layer", "out")])
            Xt = np.concatenate([T("layer", "in"), T("layer", "out")])
            cache["res"] = fitm(Xs, Xt, lam, priors.get("res_out"))
            info["residual_r2"] = r2(Xs, Xt, cache["res"])
        return cache["res"]
    attn_roles = [r for r in roles if r in ATTN]
    if attn_roles:
        q_res = fitm(T("q_proj", "in"), S("q_proj", "in"), lam, priors.get("attn_in"))  # x_s ~= Q^T x_t
        info["attn_in_r2"] = r2(T("q_proj", "in"), S("q_proj", "in"), q_res)
        sims = {r: H.head_cka(S(r, "out"), T(r, "out"), a_s["nq"] if r == "q_proj" else a_s["nkv"],
                              a_t["nq"] if r == "q_proj" else a_t["nkv"]) for r in ("q_proj", "k_proj", "v_proj")}
        match = H.match_heads(sims["q_proj"], sims["k_proj"], sims["v_proj"], a_s["nkv"], a_t["nkv"])
        info["heads"] = {"kv": {b: [a, round(s, 4)] for b, (a, s) in sorted(match["kv"].items())},
                         "q": {b: [a, round(s, 4)] for b, (a, s) in sorted(match["q"].items())}}
        rope_ok = rope_safe and hd_s == hd_t and a_s.get("rope_theta") == a_t.get("rope_theta")
        info["qk_map"] = "rope-commuting 2x2 blocks" if rope_ok else (
            "general ridge (RoPE-unsafe, requested)" if not rope_safe else "identity within head (head_dim/theta differ)")
        for role in ("q_proj", "k_proj", "v_proj"):
            if role not in roles:
                continue
            pairs = match["q"] if role == "q_proj" else match["kv"]
            Ys, Yt = S(role, "out"), T(role, "out")
            R = np.zeros((Ys.shape[1], Yt.shape[1]))
            for b, (a, _) in pairs.items():
                ys, yt = Ys[:, a * hd_s:(a + 1) * hd_s], Yt[:, b * hd_t:(b + 1) * hd_t]
                if role == "v_proj" or (role != "v_proj" and not rope_safe):
                    M = fitm(ys, yt, lam)
                elif rope_ok:
                    M = H.fit_rope_map(ys, yt)
                else:
                    M = H.identity_map(hd_s, hd_t)
                R[a * hd_s:(a + 1) * hd_s, b * hd_t:(b + 1) * hd_t] = M
            maps[role] = (q_res, R)
            info[f"{role}_out_r2"] = r2(Ys, Yt, R)
        if "o_proj" in roles:
            Xs, Xt = S("o_proj", "in"), T("o_proj", "in")
            Q = np.zeros((Xt.shape[1], Xs.shape[1]))
            for b, (a, _) in match["q"].items():
                Q[b * hd_t:(b + 1) * hd_t, a * hd_s:(a + 1) * hd_s] = fitm(
                    Xt[:, b * hd_t:(b + 1) * hd_t], Xs[:, a * hd_s:(a + 1) * hd_s], lam)
            R = residual_map()
            maps["o_proj"] = (Q, R)
            info["o_proj_in_r2"] = r2(Xt, Xs, Q)
            info["o_proj_out_r2"] = r2(S("o_proj", "out"), T("o_proj", "out"), R)
    mlp_roles = [r for r in roles if r in MLP]
    if mlp_roles:
        q_res = fitm(T("gate_proj", "in"), S("gate_proj", "in"), lam, priors.get("mlp_in"))
        info["mlp_in_r2"] = r2(T("gate_proj", "in"), S("gate_proj", "in"), q_res)
        # neurons are mapped on post-activation features (down_proj inputs: full rank, unlike gate/up outputs,
        # which live in a rank <= hidden subspace); the same neuron map serves gate/up outputs
        if fit == "procrustes":  # neurons: a partial permutation (the symmetry of an elementwise nonlinearity)
            R_ff = neuron_permutation(S("down_proj", "in"), T("down_proj", "in"))  # a_t ~= R_ff^T a_s
        else:
            R_ff = fitm(S("down_proj", "in"), T("down_proj", "in"), lam)
        for role in ("gate_proj", "up_proj"):
            if role in roles:
                maps[role] = (q_res, R_ff)
                info[f"{role}_out_r2"] = r2(S(role, "out"), T(role, "out"), R_ff)
        if "down_proj" in roles:
            Q = R_ff.T if fit == "procrustes" else fitm(T("down_proj", "in"), S("down_proj", "in"), lam)
            R = residual_map()
            maps["down_proj"] = (Q, R)
            info["down_proj_in_r2"] = r2(T("down_proj", "in"), S("down_proj", "in"), Q)
            info["down_proj_out_r2"] = r2(S("down_proj", "out"), T("down_proj", "out"), R)
    return maps, info


def embedding_priors(src, tgt, i: int, j: int, base: dict | None = None) -> dict:
    """Residual-stream maps from the shared-vocabulary token embeddings (LoRASuite's W_x, both directions), and
    their post-RMSNorm versions for layer i -> j (norm gains moved across): priors for the activation ridge fits."""
    import torch

    from regraft.port.stream import StreamedModel

    def emb(m):
        return m.embedding() if isinstance(m, StreamedModel) else m.get_input_embeddings().weight

    def gains(m, layer, name):
        if isinstance(m, StreamedModel):
            return m.norm_gain(layer, name).double().numpy()
        return getattr(m.model.layers[layer], name).weight.detach().double().cpu().numpy()

    if base is None:  # Et Q0 ~= Es ; Es R0 ~= Et  (ridge, lam 1e-3), from Gram matrices summed over row chunks
        with torch.no_grad():
            V = min(emb(src).shape[0], emb(tgt).shape[0])
            hs, ht = emb(src).shape[1], emb(tgt).shape[1]
            Gss, Gtt, Gts = np.zeros((hs, hs)), np.zeros((ht, ht)), np.zeros((ht, hs))
            for a in range(0, V, 8192):
                Es = emb(src)[a:min(a + 8192, V)].double().cpu().numpy()
                Et = emb(tgt)[a:min(a + 8192, V)].double().cpu().numpy()
                Gss += Es.T @ Es
                Gtt += Et.T @ Et
                Gts += Et.T @ Es

        def _solve(G, R):
            return np.linalg.solve(G + 1e-3 * float(np.diag(G).mean()) * np.eye(G.shape[0]), R)

        base = {"q0": _solve(Gtt, Gts), "r0": _solve(Gss, Gts.T)}

    out = {"res_out": base["r0"], "_base": base}
    for key, name in (("attn_in", "input_layernorm"), ("mlp_in", "post_attention_layernorm")):
        gs, gt = gains(src, i, name), gains(tgt, j, name)
        gt = np.where(np.abs(gt) < 1e-8, 1e-8, gt)
        out[key] = (1.0 / gt)[:, None] * base["q0"] * gs[None, :]
    return out


def _siblings(mode, a_s: dict, a_t: dict, source_dir, target_dir) -> dict | None:
    """None when not asked or shapes differ; else {"identity": bool, "why": str, "sigma": float|None}."""
    same = all(a_s[k] == a_t[k] for k in ("layers", "hidden", "nq", "nkv", "hd", "moe", "vocab"))
    if mode is False or (mode == "auto" and not same):
        return None
    if mode is True:
        return {"identity": True, "why": "asked", "sigma": None}
    from regraft.drift import COPY_MAX, drift_once

    d = drift_once(source_dir, target_dir)
    ok = bool(d.copy_ok)
    return {"identity": ok, "sigma": round(float(d.sigma), 5), "verdict": d.verdict,
            "why": f"drift sigma {d.sigma:.4f} {'<=' if ok else '>'} {COPY_MAX}"}


def _rel_delta(X, Y, A, B, s) -> float:
    d = np.linalg.norm(s * (X @ A.T) @ B.T)
    y = np.linalg.norm(Y)
    return float(d / y) if y > 0 else 0.0


# --------------------------------------------------------------------------- gain search (same vocabulary)
def kl_to_teacher(student, teacher_logp: list, seqs) -> float:
    import torch

    tot, n = 0.0, 0
    with torch.no_grad():
        for lp_t, s in zip(teacher_logp, seqs):
            lp = torch.log_softmax(student(input_ids=torch.tensor([s], device=student.device)).logits[0].float(), -1)
            tot += float((lp_t.exp() * (lp_t - lp)).sum())
            n += lp.shape[0]
    return tot / max(n, 1)


def gain_search(target_model, adapter_dir, teacher_logp, seqs, gammas=GAMMAS) -> tuple[float, dict]:
    """gamma minimising mean token KL(source+adapter || target + gamma * delta); gamma multiplies every B."""
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(target_model, str(adapter_dir)).eval()
    Bs = [(p, p.detach().clone()) for n, p in pm.named_parameters() if "lora_B" in n]
    res = {}
    for g in gammas:
        with torch.no_grad():
            for p, b0 in Bs:
                p.copy_(b0 * g)
        res[g] = kl_to_teacher(pm, teacher_logp, seqs)
    with torch.no_grad():
        for p, b0 in Bs:
            p.copy_(b0)
    pm.unload()
    best = min(res, key=res.get)
    return best, {str(k): round(v, 6) for k, v in res.items()}


def teacher_logprobs(source_model, adapter_dir, seqs) -> list:
    import torch
    from peft import PeftModel

    pm = PeftModel.from_pretrained(source_model, str(adapter_dir)).eval()
    out = []
    with torch.no_grad():
        for s in seqs:
            out.append(torch.log_softmax(pm(input_ids=torch.tensor([s], device=pm.device)).logits[0].float(), -1))
    pm.unload()
    return out


def teacher_logprobs_streamed(sm, adapter_dir, seqs):
    """`teacher_logprobs` with the source streamed: the adapter's LoRA applied as forward hooks on each loaded
    layer. None when the adapter has modules a hook cannot apply (the caller then uses the whole model)."""
    from regraft.port.stream import adapter_layer_factors, forward_layers, lora_hooks, streamed_final

    fac, bad = adapter_layer_factors(adapter_dir)
    if bad:
        return None
    hooks = []

    def before(i, layer):
        hooks.extend(lora_hooks(layer, fac.get(i, {})))

    def after(i, layer):
        for h in hooks:
            h.remove()
        hooks.clear()

    return streamed_final(sm, forward_layers(sm, seqs, before_layer=before, after_layer=after))


def gain_search_streamed(sm, adapter_dir, teacher_logp, seqs, gammas=GAMMAS) -> tuple[float, dict]:
    """`gain_search` with the target streamed: one pass over the layers runs every gamma (the sequences are
    repeated once per gamma; the hooks scale B by the gamma of the sequence being run)."""
    import torch

    from regraft.port.stream import adapter_layer_factors, forward_layers, lora_hooks

    fac, bad = adapter_layer_factors(adapter_dir)
    if bad:
        raise ValueError(f"adapter modules not applicable as hooks: {bad[:3]}")
    gammas = list(gammas)
    runs = [s for _ in gammas for s in seqs]
    state = {"k": 0, "hooks": []}

    def before(i, layer):
        state["k"] = 0
        state["hooks"] = lora_hooks(layer, fac.get(i, {}), gamma=lambda: gammas[state["k"] // len(seqs)])

    def on_layer(i, layer, k, h_in, h_out):
        state["k"] = k + 1

    def after(i, layer):
        for h in state["hooks"]:
            h.remove()

    hs = forward_layers(sm, runs, on_layer, before_layer=before, after_layer=after)
    norm, head = sm.final_norm(), sm.lm_head()
    res = {}
    with torch.no_grad():
        for gi, g in enumerate(gammas):
            tot, n = 0.0, 0
            for q, lp_t in enumerate(teacher_logp):
                h = hs[gi * len(seqs) + q]
                lp = torch.log_softmax(torch.nn.functional.linear(norm(h), head)[0].float(), -1).cpu()
                tot += float((lp_t.exp() * (lp_t - lp)).sum())
                n += lp.shape[0]
            res[g] = tot / max(n, 1)
    best = min(res, key=res.get)
    return best, {str(k): round(v, 6) for k, v in res.items()}


# --------------------------------------------------------------------------- the method
def project_adapter(adapter_dir, source_dir, target_dir, out_dir, calib_texts=None, *, mlp: str = "map",
                    lam: float = 1e-6, calibrate_scale: bool = True, gain: str | float = "auto",
                    rope_safe: bool = True, use_cka: bool = True, use_priors: bool = True, max_tokens: int = 4096,
                    force: bool = False,
                    show_progress: bool = True, fit: str = "procrustes", stream: bool = True,
                    siblings: str | bool = "auto") -> MethodReport:
    """Project ``adapter_dir`` (trained on ``source_dir``) onto ``target_dir``; write a PEFT LoRA to ``out_dir``.

    ``siblings``: "auto" (default) runs `regraft.drift` when the two models have the same shapes; when they are
    siblings (sigma <= the copy threshold: one was fine-tuned from the other, so they share coordinates) the maps
    are the identity and the layers are matched one to one: the projection is the copy, then scale-calibrated
    and gain-searched. Maps fitted on activations instead rotate the low-variance directions the adapter often
    uses (measured on the zoo's S->T1: EM 0.01 fitted vs 0.43 copied). True forces it, False never.

    ``calib_texts``: generic unlabelled text (list of str, or of token-id lists); None -> weight-only fallback
    (flagged). ``mlp``: "map" or "skip". ``gain``: "auto" (search, same vocabulary), a number, or "off".
    ``stream``: read both models layer by layer from their safetensors (default; peak memory ~ one decoder layer
    + the calibration activations + the embeddings) instead of loading them whole (the reference path).
    """
    t0 = time.perf_counter()
    reset_peak_rss()
    rep = MethodReport("project", flags=["initialiser: a projection is not a transfer by itself; check it "
                                   "(regraft verify / the label-free checks) or distill from it"])
    spec, factors, skipped = read_factors(adapter_dir)
    if spec.use_dora:
        rep.flags.append("DoRA magnitudes are not projected (dropped)")
    mem = PhaseMemory(carry=0.0)
    if stream:
        from regraft.port.stream import StreamedModel

        src, tgt = StreamedModel(source_dir), StreamedModel(target_dir)
        cap = LazyActs  # block states now, each layer's module activations when its maps are fitted
    else:
        src, tgt = load_model(source_dir), load_model(target_dir)
        cap = capture
    a_s, a_t = _arch(src), _arch(tgt)
    if a_s["moe"]:
        rep.notes.append("MoE source: expert LoRA has no dense equivalent; attention projected only, expert "
                         "deltas need distill (docs/transfer.md)")
    if a_t["moe"]:
        rep.notes.append("MoE target: MLP projection skipped (experts are not targeted)")
    do_mlp = mlp == "map" and not a_s["moe"] and not a_t["moe"]
    sib = _siblings(siblings, a_s, a_t, source_dir, target_dir)
    if sib is not None:
        rep.details["siblings"] = sib
        if sib["identity"]:
            rep.flags.append(f"siblings ({sib['why']}): identity maps, layers one to one: the copy, "
                             "scale-calibrated")
    roles_present = sorted({f.role for f in factors.values()})
    if not do_mlp and any(r in MLP for r in roles_present):
        rep.notes.append(f"MLP modules not projected ({'--mlp skip' if mlp != 'map' else 'MoE'}): "
                         + ", ".join(r for r in roles_present if r in MLP))
    with progress(show_progress) as prog:
        tok_s, tok_t = (load_tokenizer(source_dir), load_tokenizer(target_dir)) if calib_texts else (None, None)
        if calib_texts:
            seqs_s, seqs_t, mode = calib_ids(calib_texts, tok_s, tok_t, max_tokens=max_tokens)
            pos_s = pos_t = None
            if mode == "span-aligned":
                pp = [paired_positions(a[1], b[1]) for a, b in zip(seqs_s, seqs_t)]
                pos_s, pos_t = [p[0] for p in pp], [p[1] for p in pp]
                seqs_s, seqs_t = [a[0] for a in seqs_s], [b[0] for b in seqs_t]
            with mem.phase("source activations"):
                acts_s = cap(src, seqs_s, pos_s, do_mlp, prog, "source activations")
            with mem.phase("target activations"):
                acts_t = cap(tgt, seqs_t, pos_t, do_mlp, prog, "target activations")
            n_tok = acts_s.n_rows if stream else next(iter(acts_s.values())).shape[0]
            rep.details["calibration"] = {"mode": mode, "sequences": len(seqs_s), "paired_tokens": n_tok}
        else:
            rep.flags.append("weight-only fallback (no calibration text): token embeddings pushed through each "
                             "layer's weights, layers matched by relative depth; expect a weaker map")
            V = min(a_s["vocab"], a_t["vocab"])
            rng = np.random.default_rng(0)
            ids = sorted(rng.choice(V, size=min(V, 20000), replace=False).tolist())
            with mem.phase("weight-only activations"):
                if stream:  # computed layer by layer when the maps ask for them
                    acts_s, acts_t = LazyActs(src, ids=ids, with_mlp=do_mlp), LazyActs(tgt, ids=ids, with_mlp=do_mlp)
                else:
                    acts_s, acts_t = weight_only_acts(src, ids, do_mlp), weight_only_acts(tgt, ids, do_mlp)
            mode = "weight-only"
        # layer map
        if sib is not None and sib["identity"]:
            S = np.eye(a_s["layers"])
            how = "siblings: one to one"
        elif calib_texts and use_cka:
            S_in = cka_matrix([acts_s[(i, "layer", "in")] for i in range(a_s["layers"])],
                              [acts_t[(j, "layer", "in")] for j in range(a_t["layers"])])
            S_out = cka_matrix([acts_s[(i, "layer", "out")] for i in range(a_s["layers"])],
                               [acts_t[(j, "layer", "out")] for j in range(a_t["layers"])])
            S = 0.5 * (S_in + S_out)
            how = "CKA (mean of block-input and block-output linear CKA) + order-preserving DP"
        else:
            S = depth_similarity(a_s["layers"], a_t["layers"])
            how = "relative depth + order-preserving DP"
        lmap = align_layers(S)
        rep.details["layer_map"] = {"how": how, "target_to_source": lmap,
                                    "similarity": np.round(S, 4).tolist(),
                                    "unmatched_target_layers": [j for j, i in enumerate(lmap) if i is None],
                                    "dropped_source_layers": sorted(set(range(a_s["layers"])) -
                                                                    {i for i in lmap if i is not None})}
        by_layer: dict[int, dict] = {}
        for f in factors.values():
            by_layer.setdefault(f.layer, {})[f.role] = f
        out_factors, per_layer, scales = {}, {}, {}
        prior_base = None
        task = prog.add_task("projecting layers", total=a_t["layers"])
        proj_phase = mem.phase("maps")
        proj_phase.__enter__()
        for j, i in enumerate(lmap):
            prog.update(task, advance=1)
            if i is None or i not in by_layer:
                continue
            roles = [r for r in by_layer[i] if r in ATTN or (do_mlp and r in MLP)]
            if not roles:
                continue
            pri = None
            if use_priors:
                pri = embedding_priors(src, tgt, i, j, prior_base)
                prior_base = pri.pop("_base")
            if sib is not None and sib["identity"]:
                maps, info = {r: (None, None) for r in roles}, {"maps": "identity (siblings)"}
            else:
                maps, info = layer_maps(acts_s, acts_t, i, j, a_s, a_t, roles, lam, rope_safe, pri, fit)
            per_layer[j] = {"source_layer": i, **info}
            for role in roles:
                f = by_layer[i][role]
                q_in, r_out = maps[role]
                At, Bt = map_factors(f.A, f.B, q_in, r_out)
                c = 1.0
                if calibrate_scale and calib_texts:
                    rs = _rel_delta(acts_s[(i, role, "in")], acts_s[(i, role, "out")], f.A, f.B, f.scale)
                    rt = _rel_delta(acts_t[(j, role, "in")], acts_t[(j, role, "out")], At, Bt, f.scale)
                    c = float(np.clip(rs / rt, 0.25, 4.0)) if rt > 0 else 1.0
                    scales[module_name(j, role)] = round(c, 4)
                out_factors[module_name(j, role)] = (At, Bt * c, f.scale)
            if stream:  # this layer pair is done: its module activations go
                acts_s.evict(i)
                acts_t.evict(j)
        proj_phase.__exit__(None, None, None)
        rep.details["layers"] = per_layer
        rep.details["scale_calibration"] = scales if scales else "off"
        rep.details["skipped_modules"] = skipped
        del acts_s, acts_t
        if not out_factors:
            from regraft.errors import InputError

            raise InputError("nothing to project: the adapter has no dense q/k/v/o/gate/up/down LoRA on matched layers")
        # gain
        gamma = 1.0
        out_dir = Path(out_dir)
        report_dict = lambda: {"regraft": "port lora --method project", **rep.to_dict()}
        same_vocab = calib_texts and mode in ("ids", "shared-vocab") and a_s["vocab"] == a_t["vocab"]
        if gain == "auto" and same_vocab:
            tmp = out_dir.with_name(f".{out_dir.name}.gain-{int(time.time() * 1e3)}")
            write_lora(tmp, spec, out_factors, target_dir, {}, force=True)
            try:
                seqs = seqs_s[:16]
                with mem.phase("gain search"):
                    t_lp = teacher_logprobs_streamed(src, adapter_dir, seqs) if stream else None
                    if t_lp is None:
                        if stream:
                            rep.notes.append("gain search on whole models (the adapter has modules the streamed "
                                             "forward cannot apply as hooks)")
                        t_lp = teacher_logprobs(load_model(source_dir) if stream else src, adapter_dir, seqs)
                        gamma, table = gain_search(load_model(target_dir) if stream else tgt, tmp, t_lp, seqs)
                    else:
                        gamma, table = gain_search_streamed(tgt, tmp, t_lp, seqs)
                    del t_lp
                rep.details["gain_search"] = {"kl_by_gamma": table, "gamma": gamma}
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        elif isinstance(gain, (int, float)):
            gamma = float(gain)
        elif gain == "auto":
            rep.notes.append("gain search skipped (needs calibration text and a shared vocabulary)")
        if gamma != 1.0:
            out_factors = {k: (A, B * gamma, s) for k, (A, B, s) in out_factors.items()}
        rep.details["gamma"] = gamma
        rep.details["modules_written"] = len(out_factors)
        rep.seconds = round(time.perf_counter() - t0, 3)
        if stream:
            src.free()
            tgt.free()
        rep.peak_rss_mb = max(mem.peak(), peak_rss_mb())
        rep.details["memory"] = mem.to_dict(
            "streamed" if stream else "whole models",
            "layer-streamed: one decoder layer of one model at a time + the calibration hidden states (every "
            "layer's input, float32) and block rows (float64, for CKA) + one layer pair's module activations + "
            "both embedding matrices" if stream else "both models loaded whole, every layer's activations kept")
        rep.out = str(out_dir)
        write_lora(out_dir, spec, out_factors, target_dir, report_dict(), force=force)
    return rep
