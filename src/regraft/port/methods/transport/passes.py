"""Streamed passes of the transport (one decoder layer in memory at a time, `port.stream`): the source's residual
states with and without the adapter at every layer boundary, and loss gradients w.r.t. those states from one
streamed forward-backward pass.

Rows: every position of every calibration sequence, concatenated in order (float64 numpy on the CPU)."""

from __future__ import annotations

import numpy as np
import torch

from regraft.port.stream import StreamedModel, adapter_layer_factors, forward_layers, lora_hooks


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1, t.shape[-1]).double().cpu()


def run_layer(sm: StreamedModel, layer, i: int, h: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``i`` of ``sm`` (already loaded) on one sequence's states (1 x L x d), as `forward_layers`."""
    pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    out = layer(h, attention_mask=sm.masks(h, pos)[sm.layer_type(i)], position_embeddings=sm.rotary(h, pos),
                position_ids=pos)
    return out[0] if isinstance(out, tuple) else out


def source_boundaries(source_dir, adapter_dir, seqs, stream: bool = True) -> tuple[list, list, str]:
    """(base, adapted, how): per boundary b = 0..L (0 = embeddings, b = output of layer b-1) the source's states
    on every row, without and with the adapter. Streamed with the LoRA as forward hooks (both runs in one pass
    over the layers); adapters a hook cannot apply (expert LoRA of an MoE source, DoRA) run the whole source in
    PEFT instead (noted in ``how``): the displacement then includes what the experts' deltas do."""
    fac, bad = adapter_layer_factors(adapter_dir)
    if stream and not bad:
        sm = StreamedModel(source_dir)
        n = len(seqs)
        runs = list(seqs) + list(seqs)
        L = sm.n_layers
        store = [[None] * (2 * n) for _ in range(L + 1)]
        state = {"k": 0, "hooks": []}

        def before(i, layer):
            state["k"] = 0
            state["hooks"] = lora_hooks(layer, fac.get(i, {}), gamma=lambda: 0.0 if state["k"] < n else 1.0)

        def on_layer(i, layer, k, h_in, h_out):
            if i == 0:
                store[0][k] = _rows(h_in)
            store[i + 1][k] = _rows(h_out)
            state["k"] = k + 1

        def after(i, layer):
            for h in state["hooks"]:
                h.remove()

        forward_layers(sm, runs, on_layer, before_layer=before, after_layer=after)
        sm.free()
        base = [torch.cat(b[:n]).numpy() for b in store]
        adapted = [torch.cat(b[n:]).numpy() for b in store]
        return base, adapted, "streamed (LoRA as forward hooks)"
    from peft import PeftModel

    from regraft.port.models import load_model

    pm = PeftModel.from_pretrained(load_model(source_dir), str(adapter_dir)).eval()
    layers = pm.base_model.model.model.layers
    out = {}
    for name, ctx in (("adapted", None), ("base", pm.disable_adapter)):
        rows: list[list] = [[] for _ in range(len(layers) + 1)]
        hooks = []
        for i, lay in enumerate(layers):
            def h(m, args, kwargs, o, i=i, rows=rows):
                x = args[0] if args else kwargs["hidden_states"]
                if i == 0:
                    rows[0].append(_rows(x))
                rows[i + 1].append(_rows(o[0] if isinstance(o, tuple) else o))

            hooks.append(lay.register_forward_hook(h, with_kwargs=True))
        try:
            with torch.no_grad():
                for s in seqs:
                    ids = torch.tensor([s], device=pm.device)
                    if ctx is None:
                        pm(input_ids=ids)
                    else:
                        with ctx():
                            pm(input_ids=ids)
        finally:
            for hk in hooks:
                hk.remove()
        out[name] = [torch.cat(r).numpy() for r in rows]
    del pm
    return out["base"], out["adapted"], ("whole source in PEFT (adapter modules not applicable as hooks: "
                                         f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")


def streamed_grads(model_dir, seqs) -> list[np.ndarray]:
    """Per boundary b = 0..L: d(next-token NLL summed over the sequence) / d(state), on every row, from one
    streamed forward pass (each layer's inputs kept) and one streamed backward pass (layers re-loaded in
    reverse order, recomputed with grad, freed). The model's base weights only."""
    sm = StreamedModel(model_dir)
    L = sm.n_layers
    inputs: list[list] = [[] for _ in range(L)]

    def on_layer(i, layer, k, h_in, h_out):
        inputs[i].append(h_in.detach())

    hs = forward_layers(sm, seqs, on_layer)
    norm, head = sm.final_norm(), sm.lm_head()
    grads: list[list] = [[None] * len(seqs) for _ in range(L + 1)]
    g = []
    with torch.enable_grad():
        for k, (h, s) in enumerate(zip(hs, seqs)):
            x = h.detach().clone().requires_grad_(True)
            logits = torch.nn.functional.linear(norm(x), head)[0].float()
            tgt = torch.tensor(s[1:], device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits[:-1], tgt, reduction="sum")
            (gx,) = torch.autograd.grad(loss, x)
            g.append(gx)
            grads[L][k] = _rows(gx)
        for i in reversed(range(L)):
            lay = sm.layer(i)
            try:
                for p in lay.parameters():
                    p.requires_grad_(False)
                for k in range(len(seqs)):
                    x = inputs[i][k].clone().requires_grad_(True)
                    out = run_layer(sm, lay, i, x)
                    (gx,) = torch.autograd.grad(out, x, grad_outputs=g[k])
                    g[k] = gx
                    grads[i][k] = _rows(gx)
            finally:
                sm.drop(i)
            inputs[i] = []
    sm.free()
    return [torch.cat(b).numpy() for b in grads]


def logit_change(source_dir, base_final: np.ndarray, adapted_final: np.ndarray, chunk: int = 1024) -> list:
    """z_{S+A} - z_S per row (logits through the source's final norm and head), in row chunks (N x V never whole
    in one array; the caller consumes the chunks)."""
    sm = StreamedModel(source_dir)
    norm, head = sm.final_norm(), sm.lm_head()
    out = []
    with torch.no_grad():
        for a in range(0, base_final.shape[0], chunk):
            hb = torch.as_tensor(base_final[a:a + chunk], dtype=torch.float32, device=sm.dev)
            ha = torch.as_tensor(adapted_final[a:a + chunk], dtype=torch.float32, device=sm.dev)
            z = torch.nn.functional.linear(norm(ha), head) - torch.nn.functional.linear(norm(hb), head)
            out.append(z.double().cpu().numpy())
    sm.free()
    return out
