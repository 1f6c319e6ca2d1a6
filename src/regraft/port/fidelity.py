"""Label-free checks (docs/transfer.md, auto): none of them needs task labels.

* teacher agreement: fraction of positions where the student's argmax equals the teacher's greedy token
  (teacher-forced on the teacher's completions of synthetic prompts);
* teacher KL: mean token KL(teacher || student) over the teacher's top-k with the tail mass as one bucket;
* side effects on generic text: mean token KL(target || target+adapter) and the NLL change, on calibration text.
"""

from __future__ import annotations

import torch


def _pad(seqs, pad_id=0):
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def topk_kl(top_logp, top_idx, student_logp):
    """KL(p || q) per row, p given on its top-k (tail = rest as one bucket), q a full log-distribution."""
    p = top_logp.exp()
    p_tail = (1 - p.sum(-1)).clamp_min(1e-8)
    lq = student_logp.gather(-1, top_idx)
    q_tail = (1 - lq.exp().sum(-1)).clamp_min(1e-8)
    return (p * (top_logp - lq)).sum(-1) + p_tail * (p_tail.log() - q_tail.log())


def student_logp(model, items, batch: int = 64):
    """Per item: the student's log-probs (L x V) at the completion positions (right padding, exact)."""
    out = []
    dev = next(model.parameters()).device
    for s in range(0, len(items), batch):
        ch = items[s:s + batch]
        ids, mask = _pad([it.prompt_ids + it.comp_ids for it in ch])
        lg = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
        lp = torch.log_softmax(lg, -1).cpu()
        for r, it in enumerate(ch):
            a = len(it.prompt_ids) - 1
            out.append(lp[r, a:a + len(it.comp_ids)])
    return out


@torch.no_grad()
def teacher_fidelity(model, items) -> dict:
    if not items:
        return {"agreement": None, "kl": None, "teacher_nll": None, "n_tokens": 0}
    agree, kl, nll, n = 0.0, 0.0, 0.0, 0
    for it, lp in zip(items, student_logp(model, items)):
        c = torch.tensor(it.comp_ids)
        agree += float((lp.argmax(-1) == c).sum())
        kl += float(topk_kl(it.top_logp, it.top_idx, lp).sum())
        nll -= float(lp.gather(1, c[:, None]).sum())
        n += len(c)
    return {"agreement": round(agree / n, 4), "kl": round(kl / n, 5), "teacher_nll": round(nll / n, 5), "n_tokens": n}


@torch.no_grad()
def side_effects(base_model_fn, adapted_model, seqs, batch: int = 32) -> dict:
    """KL(target || target+adapter) and NLL change per token on generic token sequences.

    ``base_model_fn``: a context manager factory that disables the adapter (PEFT ``disable_adapter``)."""
    if not seqs:
        return {"generic_kl": None, "generic_nll_delta": None}
    kl, nll_a, nll_b, n = 0.0, 0.0, 0.0, 0
    dev = next(adapted_model.parameters()).device
    for s in range(0, len(seqs), batch):
        ids, mask = _pad(seqs[s:s + batch])
        ids, mask = ids.to(dev), mask.to(dev)
        la = torch.log_softmax(adapted_model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        with base_model_fn():
            lb = torch.log_softmax(adapted_model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        m = mask[:, 1:].bool()
        tgt = ids[:, 1:]
        kl += float(((lb.exp() * (lb - la)).sum(-1)[:, :-1][m]).sum())
        nll_a -= float(la[:, :-1].gather(-1, tgt[..., None])[..., 0][m].sum())
        nll_b -= float(lb[:, :-1].gather(-1, tgt[..., None])[..., 0][m].sum())
        n += int(m.sum())
    return {"generic_kl": round(kl / n, 5), "generic_nll_base": round(nll_b / n, 5),
            "generic_nll_adapted": round(nll_a / n, 5), "generic_nll_delta": round((nll_a - nll_b) / n, 5),
            "generic_tokens": n}


def adapter_checks(target_dir, adapter_dir, items, generic_seqs) -> dict:
    """Load target+adapter in PEFT (this is also the load check) and run every label-free check."""
    from peft import PeftModel

    from regraft.port.models import load_model

    pm = PeftModel.from_pretrained(load_model(target_dir), str(adapter_dir)).eval()
    out = {"loads_in_peft": True, **teacher_fidelity(pm, items), **side_effects(pm.disable_adapter, pm, generic_seqs)}
    with pm.disable_adapter():
        base = teacher_fidelity(pm, items)
    out["target_base_agreement"], out["target_base_kl"] = base["agreement"], base["kl"]
    return out
