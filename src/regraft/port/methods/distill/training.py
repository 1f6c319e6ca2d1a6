"""``distill``: carry an adapter to any target by distillation on synthetic prompts (docs/transfer.md, "distill").

1. Synthetic prompts from seeds / a template / sampling the source+adapter (`prompts`), leakage-guarded.
2. Teacher = source+adapter (in process, or an OpenAI-compatible endpoint): greedy completion, top-k log-probs,
   TiTok excess  e_i = log p_{S+A}(y_i) - log p_S(y_i).
3. Selection: the top ``keep`` fraction of prompts by mean excess; token mask: top ``token_frac`` by excess.
4. Loss: ``seq`` (masked NLL of the teacher's completion), ``logit`` (KL over the teacher's top-k + tail; same
   vocabulary) or ``delta`` (teacher  p ∝ exp(z_T + (z_{S+A} - z_S)) on the top-k support: the target keeps its
   own knowledge and imports the adapter's change only).
5. Student: a PEFT LoRA on the target (same r/alpha, every dense projection the target has, so MoE -> dense gets
   MLP LoRA too), initialised from ``project`` when possible; AdamW through accelerate; early stop on a held-out
   *synthetic* split (teacher KL), never on test data. The best state is written atomically.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import torch

from regraft.port import prompts as P
from regraft.port.fidelity import _pad, student_logp, teacher_fidelity, topk_kl
from regraft.port.factors import ROLES
from regraft.port.memory import peak_rss_mb, reset_peak_rss
from regraft.port.models import load_model, load_tokenizer, progress
from regraft.port.result import MethodReport


def make_student(target_dir, spec, init_adapter=None, dev=None):
    """(peft model, init note). Targets every dense q/k/v/o/gate/up/down the target has."""
    from peft import LoraConfig, get_peft_model

    model = load_model(target_dir, dev)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    roles = [r for r in ROLES if r in names]
    cfg = LoraConfig(r=int(spec.r), lora_alpha=float(spec.alpha), use_rslora=bool(spec.use_rslora),
                     target_modules=roles, lora_dropout=0.0, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    note = "standard init (A Kaiming, B = 0)"
    if init_adapter is not None:
        from safetensors.torch import load_file

        init = load_file(str(Path(init_adapter) / "adapter_model.safetensors"))
        ic = json.loads((Path(init_adapter) / "adapter_config.json").read_text())
        if int(ic["r"]) == int(spec.r) and float(ic["lora_alpha"]) == float(spec.alpha):
            params = dict(pm.named_parameters())
            n = 0
            with torch.no_grad():
                for k, v in init.items():
                    pk = k.replace(".lora_A.weight", ".lora_A.default.weight").replace(
                        ".lora_B.weight", ".lora_B.default.weight")
                    if pk in params and params[pk].shape == v.shape:
                        params[pk].copy_(v)
                        n += 1
            note = f"initialised from the projection ({n // 2} modules)"
    return pm, roles, note


def _batch(items, idx, pad_id=0):
    ch = [items[i] for i in idx]
    ids, mask = _pad([it.prompt_ids + it.comp_ids for it in ch], pad_id)
    return ch, ids, mask


def _loss(kind, lp, it, tb=None):
    """Per-token loss vector for one item; ``lp``: student log-probs at the completion positions (L x V)."""
    c = torch.tensor(it.comp_ids, device=lp.device)
    if kind == "seq":
        return -lp.gather(1, c[:, None])[:, 0]
    ti, tv = it.top_idx.to(lp.device), it.top_logp.to(lp.device)
    if kind == "delta":
        z = tb.to(lp.device) + tv - it.base_logp.to(lp.device)
        mass = tv.exp().sum(-1, keepdim=True).clamp(max=1.0)
        tv = torch.log_softmax(z, -1) + mass.log()
    return topk_kl(tv, ti, lp)


def distill_adapter(adapter_dir, source_dir, target_dir, out_dir, *, seeds=None, prompts=None, template=None,
                    n_prompts: int = 256, keep: float = 0.5, token_frac: float = 0.7, loss: str = "logit",
                    init: str | Path | None = "project", calib_texts=None, teacher=None, max_new: int = 24,
                    steps: int = 1500, batch: int = 32, lr: float | None = None, val_frac: float = 0.1,
                    eval_every: int = 25, patience: int = 10, seed: int = 0, exclude=(), k: int = 20,
                    gate_init: bool = True, gate_min_gain: float = 0.2, keep_generic: float = 0.0,
                    sample_frac: float = 0.0, mlp: str = "map",
                    force: bool = False, show_progress: bool = True, work_dir=None, stream: bool = True,
                    accelerator=None) -> MethodReport:
    """Distil ``adapter_dir`` (on ``source_dir``) into a LoRA on ``target_dir``, written to ``out_dir``.

    Prompts: ``prompts`` (ready list), else ``seeds`` (list of str or a seeds.jsonl path) and/or ``template``;
    ``sample_frac`` of the pool sampled from the source+adapter in the seeds' frame (`prompts.from_samples`; for
    seeds in words, where character substitution makes gibberish), the rest from seeds/template.
    ``n_prompts`` prompts are used for training (a pool of n_prompts/keep is labelled, the top ``keep`` by excess
    kept). ``init``: "project" (project first, with ``calib_texts`` and ``mlp``), a projected adapter folder, or None.
    ``exclude``: known test prompts (leakage guard; a no-op in production).
    ``gate_init`` / ``gate_min_gain``: the projection is kept as the student's init only if it closes at least
    ``gate_min_gain`` of the bare target's teacher KL on held-out synthetic prompts (a label-free gate; a marginal
    gain is not worth a B != 0 start, which measured worse than the standard init on the zoo's SM->T3).
    ``keep_generic``: weight of a side-effect guard: KL(target base || student) on ``calib_texts`` (generic text,
    top-``k`` of the bare target, a quarter batch per step) added to the loss, so the student changes the target
    only where the teacher asks it to (a label-free replay). 0 = off.
    ``stream``: the in-process teacher reads the source layer by layer (`teacher.StreamedTeacher`) and the
    projection init streams both models; the source is freed before the student's target is loaded, so source
    and target are never in memory together. The target is resident (whole) during training. Peak RSS per phase
    goes to ``details["memory"]``.
    """
    import gc

    from accelerate import Accelerator

    from regraft.port.factors import read_factors
    from regraft.port.memory import PhaseMemory

    t0 = time.perf_counter()
    reset_peak_rss()
    mem = PhaseMemory(carry=peak_rss_mb())
    rng = random.Random(seed)
    torch.manual_seed(seed)
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())  # `distributed.make_accelerator`: FSDP
    dev = acc.device
    spec, _, _ = read_factors(adapter_dir)
    rep = MethodReport("distill")
    tok = load_tokenizer(target_dir) or load_tokenizer(source_dir)
    if tok is None:
        from regraft.errors import InputError

        raise InputError("distill needs a tokenizer in the target (or source) folder")
    if tok.get_vocab() != (load_tokenizer(source_dir) or tok).get_vocab() and loss != "seq":
        rep.notes.append(f"tokenizers differ: loss {loss} needs one vocabulary, using seq")
        loss = "seq"
    out_dir = Path(out_dir)
    pool_n = int(math.ceil(n_prompts / max(keep, 1e-6)))
    with progress(show_progress) as prog:
        # 1. prompts (2. the teacher first when it writes some of them)
        own_teacher = teacher is None
        phase = mem.phase("teacher")
        phase.__enter__()

        def in_process_teacher():
            from regraft.port.teacher import in_process

            t, note = in_process(source_dir, adapter_dir, tok, stream, k, dev)
            if note:
                rep.notes.append(note)
            return t

        seed_prompts = P.seed_prompts(seeds) if seeds is not None else None
        sampled = []
        if prompts is None:
            prompts = []
            n_sample = int(round(pool_n * sample_frac)) if seed_prompts else 0
            if n_sample:
                teacher = teacher or in_process_teacher()
                if hasattr(teacher, "generate"):
                    sampled = P.from_samples(teacher, seed_prompts, n_sample, seed + 2, set(exclude), prog=prog)
                    prompts += sampled
                else:
                    rep.notes.append("sampling prompts needs an in-process teacher (the endpoint teacher labels "
                                     "only): seeds/template prompts only")
            if template:
                rest = pool_n - len(prompts)
                prompts += P.from_template(template, rest if not seed_prompts else rest // 2, seed,
                                           set(exclude) | set(prompts))
            if seed_prompts:
                prompts += P.from_seeds(seed_prompts, pool_n - len(prompts), seed + 1, set(exclude) | set(prompts))
            if not prompts:
                from regraft.errors import InputError

                raise InputError("distill needs prompts: --prompts seeds.jsonl (a few examples) or a template")
        prompts = [p for p in prompts if p not in set(exclude)][:pool_n]
        rep.details["prompts"] = {"pool": len(prompts), "source": "given" if seed_prompts is None and not template
                                  else ("seeds" if seed_prompts else "") + ("+template" if template else ""),
                                  "seeds": len(seed_prompts or []), "sampled": len(sampled),
                                  "sample_frac": sample_frac}
        if exclude:
            rep.details["leakage"] = P.leakage(prompts, list(exclude))
        # 2. teacher labels
        if teacher is None:
            teacher = in_process_teacher()
        t1 = time.perf_counter()
        items = teacher.label(prompts, max_new=max_new, prog=prog)
        rep.details["teacher"] = {"kind": type(teacher).__name__, "calls": getattr(teacher, "calls", None),
                                  "labelled": len(items), "seconds": round(time.perf_counter() - t1, 2)}
        if own_teacher:  # free the source before the target is loaded
            if hasattr(teacher, "free"):
                teacher.free()
            if hasattr(teacher, "model"):
                del teacher.model
            teacher = None
            gc.collect()
        phase.__exit__(None, None, None)
        # 3. selection
        exc = [float(it.excess.mean()) for it in items]
        sel = P.select_by_excess(exc, keep) if keep < 1 else list(range(len(items)))
        items = [items[i] for i in sel][:n_prompts]
        rep.details["selection"] = {"keep": keep, "kept": len(items), "token_frac": token_frac,
                                    "mean_excess_kept": round(sum(exc[i] for i in sel) / max(len(sel), 1), 4),
                                    "mean_excess_all": round(sum(exc) / max(len(exc), 1), 4)}
        rng.shuffle(items)
        n_val = max(1, int(round(len(items) * val_frac))) if len(items) > 4 else 0
        val, train = items[:n_val], items[n_val:]
        # 4. student (+ projection init)
        init_dir, init_note = None, None
        if init == "project":
            from regraft.port.methods.project.projection import project_adapter

            wd = Path(work_dir) if work_dir else out_dir.parent
            init_dir = wd / f".{out_dir.name}.proj-init"
            try:
                with mem.phase("projection init"):
                    prep = project_adapter(adapter_dir, source_dir, target_dir, init_dir, calib_texts=calib_texts,
                                           mlp=mlp, force=True, show_progress=show_progress, stream=stream)
                rep.details["projection_init"] = {"flags": prep.flags, "gamma": prep.details.get("gamma"),
                                                  "layer_map": prep.details["layer_map"]["target_to_source"]}
            except Exception as e:  # projection is optional: fall back to standard init, say why
                rep.notes.append(f"projection init failed ({type(e).__name__}: {e}); standard init")
                init_dir = None
        elif init:
            init_dir = Path(init)
        phase = mem.phase("student (target resident, training)")
        phase.__enter__()
        student, roles, init_note = make_student(target_dir, spec, init_dir, dev)
        if init_dir is not None and val and gate_init:
            # label-free gate: keep the projection as init only if it is closer to the teacher than the bare
            # target on held-out synthetic prompts (across lineages it usually is not: docs/transfer.md, the numbers)
            with torch.no_grad():
                kl_p = teacher_fidelity(student, val)["kl"]
                with student.disable_adapter():
                    kl_b = teacher_fidelity(student, val)["kl"]
            keep_proj = kl_p <= (1.0 - gate_min_gain) * kl_b
            rep.details["init_gate"] = {"kl_projection": kl_p, "kl_target_base": kl_b, "min_gain": gate_min_gain,
                                        "kept": keep_proj}
            if not keep_proj:
                del student  # never two targets at once
                gc.collect()
                student, roles, _ = make_student(target_dir, spec, None, dev)
                init_note = (f"standard init: the projection was rejected by the label-free gate (teacher KL "
                             f"{kl_p:.4f} vs {kl_b:.4f} of the bare target on synthetic val; it must close "
                             f">= {gate_min_gain:.0%} of it)")
                init_dir = None
        if init == "project" and init_dir is not None:
            import shutil

            shutil.rmtree(init_dir, ignore_errors=True)
        rep.details["student"] = {"targets": roles, "r": int(spec.r), "lora_alpha": float(spec.alpha),
                                  "init": init_note}
        # target-base log-probs on the teacher support (delta teacher)
        tbs = None
        if loss == "delta":
            with torch.no_grad(), student.disable_adapter():
                tbs = [lp.gather(-1, it.top_idx) for it, lp in zip(items, student_logp(student, items))]
            tb_of = {id(it): t for it, t in zip(items, tbs)}
        gen = None
        if keep_generic > 0 and calib_texts:  # the bare target's own top-k on generic text: what to keep
            from regraft.port.prompts import generic_seqs

            gseqs = [q for q in generic_seqs(calib_texts, tok, n=128, L=64) if len(q) > 1]
            if gseqs:
                gids, gmask = _pad(gseqs, tok.pad_token_id or 0)
                tv, ti = [], []
                with torch.no_grad(), student.disable_adapter():
                    for c in range(0, len(gids), 8):  # top-k only: full-vocab log-probs of 8 rows at a time
                        glp = torch.log_softmax(student(input_ids=gids[c:c + 8].to(dev),
                                                        attention_mask=gmask[c:c + 8].to(dev)).logits.float(), -1)
                        top = glp.topk(k, -1)
                        tv.append(top.values.cpu())
                        ti.append(top.indices.cpu())
                gen = {"ids": gids, "mask": gmask, "v": torch.cat(tv), "i": torch.cat(ti)}
            rep.details["keep_generic"] = {"weight": keep_generic, "texts": len(gseqs)}
        elif keep_generic > 0:
            rep.notes.append("keep_generic needs calib_texts (generic text): side-effect guard off")
        if lr is None:  # docs/transfer.md, distill: 1e-4 without warm-up from a projection, 2e-4 with a short warm-up otherwise
            lr = 1e-4 if init_dir is not None else 2e-4
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
        student, opt = acc.prepare(student, opt)
        train_local = train[acc.process_index::acc.num_processes]
        best = {"kl": float("inf"), "step": 0, "state": None}
        hist, bad, step = [], 0, 0
        warm = 0 if init_dir is not None else max(1, steps // 20)
        task = prog.add_task(f"distill ({loss})", total=steps)
        metric = "teacher_nll" if loss == "seq" else "kl"

        def evaluate(step):
            student.eval()
            f = teacher_fidelity(acc.unwrap_model(student), val) if val else {"kl": 0.0, "teacher_nll": 0.0}
            student.train()
            hist.append({"step": step, **f})
            return f[metric]  # seq-KD sharpens the student: its KL can grow while it agrees more; use NLL

        kl0 = evaluate(0)
        best.update(kl=kl0, step=0, state=copy.deepcopy({n: p.detach().cpu() for n, p in
                                                          acc.unwrap_model(student).named_parameters() if p.requires_grad}))
        student.train()
        order = []
        for step in range(1, steps + 1):
            if len(order) < batch:
                order += rng.sample(range(len(train_local)), len(train_local))
            idx, order = order[:batch], order[batch:]
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, step / warm) if warm else lr
            ch, ids, mask = _batch(train_local, idx, tok.pad_token_id or 0)
            lg = student(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
            lps = torch.log_softmax(lg, -1)
            per_tok, exs = [], []
            for r, it in enumerate(ch):
                a = len(it.prompt_ids) - 1
                per_tok.append(_loss(loss, lps[r, a:a + len(it.comp_ids)], it, tb_of[id(it)] if tbs else None))
                exs.append(it.excess)
            lt = torch.cat(per_tok)
            m = P.token_mask(torch.cat(exs), token_frac).to(lt.device) if token_frac < 1 else torch.ones_like(
                lt, dtype=torch.bool)
            loss_v = lt[m].mean()
            if gen is not None:
                gi = torch.tensor(rng.sample(range(len(gen["ids"])), min(len(gen["ids"]), max(1, batch // 4))))
                glp = torch.log_softmax(student(input_ids=gen["ids"][gi].to(dev),
                                                attention_mask=gen["mask"][gi].to(dev)).logits.float(), -1)
                gkl = topk_kl(gen["v"][gi].to(dev), gen["i"][gi].to(dev), glp)
                gm = gen["mask"][gi].to(dev).bool()
                loss_v = loss_v + keep_generic * gkl[gm].mean()
            acc.backward(loss_v)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            prog.update(task, advance=1, description=f"distill ({loss}) loss {loss_v.item():.3f}")
            if step % eval_every == 0 or step == steps:
                kl = evaluate(step)
                if kl < best["kl"] - 1e-5:
                    best.update(kl=kl, step=step, state={n: p.detach().cpu().clone() for n, p in
                                                         acc.unwrap_model(student).named_parameters()
                                                         if p.requires_grad})
                    bad = 0
                else:
                    bad += 1
                    if bad >= patience:
                        break
        model = acc.unwrap_model(student)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best["state"]:
                    p.copy_(best["state"][n])
        model.eval()
        rep.details["training"] = {"loss": loss, "lr": lr, "batch": batch, "steps_run": step, "max_steps": steps,
                                   "best_step": best["step"], "early_stop_metric": metric, "best_val": round(best["kl"], 5),
                                   "early_stopped": step < steps, "val_prompts": len(val),
                                   "train_prompts": len(train), "history": hist,
                                   "train_tokens": sum(len(it.prompt_ids) + len(it.comp_ids) for it in train),
                                   "accelerate": {"device": str(dev), "processes": acc.num_processes}}
        rep.checks = {"teacher_val": teacher_fidelity(model, val) if val else {}}
        phase.__exit__(None, None, None)
        rep.seconds = round(time.perf_counter() - t0, 3)
        rep.peak_rss_mb = max(mem.peak(), peak_rss_mb())
        rep.details["memory"] = mem.to_dict(
            "source streamed, target resident" if stream else "whole models (source freed before the target)",
            "the source (teacher) is read layer by layer and freed before the student's target model is "
            "loaded; the target is whole during training (accelerate places it)" if stream else
            "source whole for the teacher, freed, then the target whole for training")
        rep.out = str(out_dir)
        if acc.is_main_process:  # one writer when several processes train (accelerate launch)
            _save(model, out_dir, target_dir, spec, {"regraft": "port lora --method distill", **rep.to_dict()},
                  force, [adapter_dir, source_dir])
        acc.wait_for_everyone()
    rep.items_val = val  # for callers that run more label-free checks (not serialised)
    return rep


def _save(model, out_dir, target_dir, spec, report, force, inputs):
    from peft import get_peft_model_state_dict

    from regraft.port.write import check_output, write_peft

    out = check_output(out_dir, [target_dir, *inputs], force)
    sd = {k: v.detach().cpu().float().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    cfg = model.peft_config["default"].to_dict()
    cfg = json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    cfg["base_model_name_or_path"] = str(target_dir)
    cfg["inference_mode"] = True
    write_peft(out, cfg, sd, report)
