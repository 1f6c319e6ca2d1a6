"""``transport_adapter``: closed-form transport of a LoRA onto a model of other shapes (see the package doc).

Calibration (no labels): the seed prompts, synthetic prompts made from them (`prompts.from_seeds`) with the
source+adapter's greedy completions, and generic text. Output: a PEFT LoRA for the target with the source's
r / alpha (rank r by reduced-rank regression or truncated SVD), written atomically, flagged as closed-form.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from regraft.port.memory import PhaseMemory, peak_rss_mb, reset_peak_rss
from regraft.port.methods.transport import VARIANTS
from regraft.port.methods.transport import cores as C
from regraft.port.result import MethodReport as Report


def calibration_seqs(source_dir, adapter_dir, tok, *, seeds=None, prompts=None, n_task: int = 64, calib_texts=None,
                     n_generic: int = 64, seed: int = 0, exclude=(), stream: bool = True, max_new: int = 24,
                     teacher=None) -> tuple[list, list, dict]:
    """(task sequences, generic sequences, info): token ids of task prompts + the source+adapter's greedy
    completions, and of generic text (64-token pieces)."""
    from regraft.port import prompts as P
    from regraft.port.prompts import generic_seqs as _generic_seqs

    ps = list(prompts or [])
    if not ps and seeds is not None:
        sp = P.seed_prompts(seeds)
        ps = list(sp) + P.from_seeds(sp, max(n_task - len(sp), 0), seed + 11, set(exclude) | set(sp))
    ps = [p for p in ps if p not in set(exclude)][:n_task]
    task = []
    if ps:
        own = teacher is None
        if own:
            from regraft.port.teacher import in_process

            teacher, _ = in_process(source_dir, adapter_dir, tok, stream)
        comps = teacher.generate(ps, max_new)
        task = [tok(p, add_special_tokens=False)["input_ids"] + list(c) for p, c in zip(ps, comps)]
        if own and hasattr(teacher, "free"):
            teacher.free()
    gen = [q for q in _generic_seqs(calib_texts, tok, n=n_generic, L=64) if len(q) > 1] if calib_texts else []
    return [q for q in task if len(q) > 1], gen, {"task_prompts": len(ps), "task_sequences": len(task),
                                                  "generic_sequences": len(gen)}


def _component(layer, moe_target: bool) -> str:
    """The module whose update is fitted in this target layer: down_proj when the layer's MLP is dense, else the
    attention output o_proj (an MoE layer's experts are not Linear modules a PEFT LoRA can target here)."""
    mlp = getattr(layer, "mlp", None)
    if mlp is not None and isinstance(getattr(mlp, "down_proj", None), torch.nn.Linear) and not moe_target:
        return "mlp.down_proj"
    return "self_attn.o_proj"


def fit_displacement(target_dir, seqs, src_base, src_adapted, r: int, *, grads_s=None, grads_t=None,
                     align_how: str = "polar", lam_rel: float = 1e-2, grad_weight: float = 1.0,
                     components: tuple[str, ...] | None = None, strength: float = 1.0, report=None,
                     logit_delta=None, final_layers: int = 1, lam_logit: float = 1e-3) -> dict:
    """Sequential closed-form fit on the target, streamed: for target layer j (in order), the transported
    displacement D_t = (h_s+A - h_s)(u_j) P_j at the same relative depth u_j, P_j aligning the source's states
    at u_j with the target's base states after layer j (`cores.align`, with gradients when given); the needed
    correction = (target base output + D_t) - (the layer's output on the target's *corrected* input); the
    component's update W = ridge(component input -> correction), rank r by reduced-rank regression; the
    corrected states then carry the update into layer j + 1. Returns {module name: (A, B)} (out x in = B A).

    ``logit_delta``: (the source adapter's change of the logits z_{S+A} - z_S per row, N x V or row chunks; the
    ratio rms(h_{S+A}) / rms(h_S) of the source's final states per row, N x 1). The vocabulary is shared, so this displacement needs no alignment at all: for
    the last ``final_layers`` target layers the wanted state is the target's own base state moved by the
    least-squares pre-image of that change through the target's head and final norm (ridge ``lam_logit``)."""
    from regraft.port.methods.project.projection import _arch
    from regraft.port.methods.transport.passes import run_layer
    from regraft.port.stream import StreamedModel

    tgt = StreamedModel(target_dir)
    moe_t = _arch(tgt)["moe"]
    l_s, l_t = len(src_base) - 1, tgt.n_layers
    lens = [len(s) for s in seqs]
    cuts = np.cumsum([0] + lens)
    with torch.no_grad():
        hb = [tgt.embed(torch.tensor([s])) for s in seqs]
    hc = [h.clone() for h in hb]
    out: dict = {}
    per_layer = {}
    head_pre = None
    if logit_delta is not None:
        W = tgt.lm_head().double().cpu().numpy()
        Wc = W - W.mean(0, keepdims=True)
        Gm = Wc.T @ Wc
        inv = np.linalg.inv(Gm + lam_logit * float(np.diag(Gm).mean()) * np.eye(Gm.shape[0]))
        g_t = tgt.final_norm().weight.detach().double().cpu().numpy()
        eps = float(getattr(tgt.config, "rms_norm_eps", 1e-6))
        dz, rho = logit_delta
        dn = C.logit_preimage(dz, W, inv)  # N x d_t: the change of the normalised final state

        g_safe = np.where(np.abs(g_t) < 1e-8, 1e-8, g_t)

        def head_pre(Yb, scale):
            # RMSNorm is scale-invariant: any c * n'/g normalises to n' exactly; c keeps the base state's size
            rms = np.sqrt((Yb * Yb).mean(1, keepdims=True) + eps)
            u = (g_t * Yb / rms + scale * dn) / g_safe
            # ... and rho, the source's own ratio rms(h_{S+A}) / rms(h_S), gives the size the adapter gives it
            return u * (rho * rms) / np.sqrt((u * u).mean(1, keepdims=True) + 1e-30)
    for j in range(l_t):
        lay = tgt.layer(j)
        try:
            with torch.no_grad():
                ob = [run_layer(tgt, lay, j, h) for h in hb]
            Yb = torch.cat([o.reshape(-1, o.shape[-1]) for o in ob]).double().cpu().numpy()
            lo, hi, w = C.boundary_weights(j, l_s, l_t)
            Xs = C.lerp(src_base[lo], src_base[hi], w)
            Ds = C.lerp(src_adapted[lo], src_adapted[hi], w) - Xs
            Gs = C.lerp(grads_s[lo], grads_s[hi], w) if grads_s is not None else None
            Gt = grads_t[j + 1] if grads_t is not None else None
            P = C.align(Xs, Yb, Gs, Gt, align_how, grad_weight)
            want = Yb + strength * (Ds @ P)
            if head_pre is not None and j >= l_t - final_layers:
                # the output boundary: the logit change, pulled back through the target's head; earlier
                # final layers get the same state target (a share of it is left to the last one)
                frac = (j - (l_t - final_layers) + 1) / final_layers
                want = (1 - frac) * want + frac * head_pre(Yb, strength) if j < l_t - 1 else head_pre(Yb, strength)
            comps = components or (_component(lay, moe_t),)
            info = {"source_boundaries": [lo, hi, round(w, 3)], "displacement_norm": float(np.linalg.norm(Ds @ P))}
            fitted = {}
            for comp in comps:
                mod = lay.get_submodule(comp)
                cap: list = []
                hooks = [mod.register_forward_hook(lambda m, a, o, cap=cap: cap.append(_flat(a[0])))]
                hooks += _apply_hooks(lay, fitted)
                with torch.no_grad():
                    oc = [run_layer(tgt, lay, j, h) for h in hc]
                for hk in hooks:
                    hk.remove()
                X = np.concatenate(cap)
                need = want - torch.cat([o.reshape(-1, o.shape[-1]) for o in oc]).double().cpu().numpy()
                W = C.ridge_fit(X, need, lam_rel)
                A, B = C.reduced_rank(X, W, r)
                fitted[comp] = (A, B)
                info[comp] = {"explained": round(C.fit_fraction(X, need, A, B), 4),
                              "need_norm": float(np.linalg.norm(need))}
            hooks = _apply_hooks(lay, fitted)
            with torch.no_grad():
                hc = [run_layer(tgt, lay, j, h) for h in hc]
            for hk in hooks:
                hk.remove()
            hb = ob
            for comp, (A, B) in fitted.items():
                out[f"model.layers.{j}.{comp}"] = (A, B)
            per_layer[j] = info
        finally:
            tgt.drop(j)
    tgt.free()
    if report is not None:
        report.details["layers"] = per_layer
        report.details["rows"] = int(cuts[-1])
    return out


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1, t.shape[-1]).double().cpu().numpy()


def _apply_hooks(layer, fitted: dict) -> list:
    hs = []
    for comp, (A, B) in fitted.items():
        mod = layer.get_submodule(comp)
        At = torch.as_tensor(A, dtype=torch.float32)
        Bt = torch.as_tensor(B, dtype=torch.float32)
        hs.append(mod.register_forward_hook(
            lambda m, a, o, At=At, Bt=Bt: o + torch.nn.functional.linear(torch.nn.functional.linear(
                a[0], At.to(o.device)), Bt.to(o.device))))
    return hs


def transport_adapter(adapter_dir, source_dir, target_dir, out_dir, *, variant: str = "ariadne", seeds=None,
                      prompts=None, calib_texts=None, n_task: int = 64, n_generic: int = 64, seed: int = 0,
                      exclude=(), lam_rel: float = 1e-2, grad_weight: float = 1.0, align_how: str = "polar",
                      components: tuple[str, ...] | None = None, gain: str | float = "auto", force: bool = False,
                      stream: bool = True, show_progress: bool = False, teacher=None,
                      final: str = "logits") -> Report:
    """Transport ``adapter_dir`` (on ``source_dir``) onto ``target_dir`` in closed form; write a PEFT LoRA.

    ``seeds`` / ``prompts``: task prompts (no answers), ``calib_texts``: generic text; ``seed``: the calibration
    draw (synthetic prompts). ``variant``: ``ariadne`` | ``bico`` | ``theseus`` (package doc). ``gain``: "auto"
    searches one global strength (KL to source+adapter on the task sequences, same vocabulary), a number fixes
    it, "off" keeps 1. ``final``: "logits" (default) makes the last target layer reproduce the source adapter's
    logit change (shared vocabulary: no alignment needed at the output), "residual" uses the aligned residual
    displacement there too (Ariadne as published)."""
    from regraft.errors import InputError
    from regraft.port.factors import read_factors, write_lora
    from regraft.port.models import load_tokenizer

    if variant not in VARIANTS:
        raise InputError(f"transport variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    reset_peak_rss()
    mem = PhaseMemory()
    tok = load_tokenizer(source_dir)
    tok_t = load_tokenizer(target_dir)
    if tok is None or tok_t is None or tok.get_vocab() != tok_t.get_vocab():
        raise InputError(f"transport ({variant}) pairs positions by token id: {source_dir} and {target_dir} need "
                         "tokenizers with one vocabulary (use --method distill with --loss seq across vocabularies)")
    if not (seeds or prompts) and not calib_texts:
        raise InputError(f"transport ({variant}) needs calibration: --prompts seeds.jsonl and/or --calib generic.txt")
    spec, _, skipped = read_factors(adapter_dir)
    rep = Report(f"transport:{variant}", flags=[("closed-form: calibrated on a few prompts and generic text, no "
                                                 "training; check it (label-free checks) or distill from it")])
    with mem.phase("calibration (teacher completions)"):
        task, gen, info = calibration_seqs(source_dir, adapter_dir, tok, seeds=seeds, prompts=prompts, n_task=n_task,
                                           calib_texts=calib_texts, n_generic=n_generic, seed=seed, exclude=exclude,
                                           stream=stream, teacher=teacher)
    rep.details["calibration"] = {**info, "seed": seed}
    seqs = task + gen
    out_dir = Path(out_dir)
    if variant == "theseus":
        from regraft.port.methods.project.projection import project_adapter

        prep = project_adapter(adapter_dir, source_dir, target_dir, out_dir, calib_texts=seqs, siblings=False,
                               force=force, show_progress=show_progress, stream=stream, gain=gain,
                               max_tokens=64 * len(seqs))
        prep.method = "transport:theseus"
        prep.flags = rep.flags + [f for f in prep.flags if not f.startswith("initialiser")]
        prep.details["calibration"] = rep.details["calibration"]
        prep.seconds = round(time.perf_counter() - t0, 3)
        return prep
    if not stream:
        rep.notes.append("stream=False: the teacher and the source pass load the source whole; the target fit is "
                         "streamed always")
    from regraft.port.methods.transport.passes import source_boundaries, streamed_grads

    with mem.phase("source states (base and adapted)"):
        sb, sa, how = source_boundaries(source_dir, adapter_dir, seqs, stream)
    rep.details["source_pass"] = how
    dz = None
    if final == "logits":
        from regraft.port.methods.transport.passes import logit_change

        dz = (logit_change(source_dir, sb[-1], sa[-1]),
              np.sqrt((sa[-1] ** 2).mean(1, keepdims=True) / np.maximum((sb[-1] ** 2).mean(1, keepdims=True), 1e-30)))
    gs = gt = None
    if variant == "bico":
        with mem.phase("gradients (one streamed forward-backward per model)"):
            gs, gt = streamed_grads(source_dir, seqs), streamed_grads(target_dir, seqs)
    with mem.phase("fit (target streamed)"):
        fit = fit_displacement(target_dir, seqs, sb, sa, int(spec.r), grads_s=gs, grads_t=gt, align_how=align_how,
                               lam_rel=lam_rel, grad_weight=grad_weight, components=components, report=rep,
                               logit_delta=dz)
    del sb, sa, gs, gt
    s_cfg = float(spec.alpha) / (np.sqrt(int(spec.r)) if spec.use_rslora else int(spec.r))
    factors_out = {name: (A, B / s_cfg, s_cfg) for name, (A, B) in fit.items()}
    gamma = 1.0
    if gain == "auto" and task:
        from regraft.port.methods.project.projection import gain_search_streamed, teacher_logprobs_streamed
        from regraft.port.stream import StreamedModel

        tmp = out_dir.with_name(f".{out_dir.name}.gain-{int(time.time() * 1e3)}")
        write_lora(tmp, spec, factors_out, target_dir, {}, force=True)
        try:
            with mem.phase("gain search"):
                ss = StreamedModel(source_dir)
                t_lp = teacher_logprobs_streamed(ss, adapter_dir, task[:16])
                ss.free()
                if t_lp is not None:
                    st = StreamedModel(target_dir)
                    gamma, table = gain_search_streamed(st, tmp, t_lp, task[:16],
                                                        gammas=(0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0))
                    st.free()
                    rep.details["gain_search"] = {"kl_by_gamma": table, "gamma": gamma}
                else:
                    rep.notes.append("gain search skipped (adapter modules not applicable as hooks)")
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    elif isinstance(gain, (int, float)):
        gamma = float(gain)
    if gamma != 1.0:
        factors_out = {k: (A, B * gamma, s) for k, (A, B, s) in factors_out.items()}
    rep.details.update(gamma=gamma, modules_written=len(factors_out), skipped_source_modules=skipped,
                       variant=variant, align=align_how, lam_rel=lam_rel, final=final)
    rep.seconds = round(time.perf_counter() - t0, 3)
    rep.peak_rss_mb = max(mem.peak(), peak_rss_mb())
    rep.details["memory"] = mem.to_dict("streamed", "one decoder layer of one model at a time + the source's states at "
                                        "every boundary (base and adapted, float64) + the target's current states")
    rep.out = str(out_dir)
    write_lora(out_dir, spec, factors_out, target_dir, {"regraft": f"port lora --method transport:{variant}",
                                                        **rep.to_dict()}, force=force, inputs=[adapter_dir, source_dir])
    return rep
