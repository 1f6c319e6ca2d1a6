"""The local reference for `verify --endpoint`: the base loaded with transformers, the adapter with PEFT.

The served generations are teacher-forced through the local model: at each served position the local next-token
distribution is computed on exactly the served context (the prompt tokenised by the base's tokenizer, then the
served tokens mapped back to ids), so the served top-k log-probabilities can be compared with the reference ones
(`compare.ref_stats`). Served token texts map to ids through ``token_id:N`` (vLLM ``--return-tokens-as-token-ids``)
or the tokenizer's own pieces (a text that decodes from two ids is ambiguous: the comparison of that sequence
stops there and the count is reported).
"""

from __future__ import annotations

from .compare import ref_stats


class TokenMap:
    def __init__(self, tok):
        self.tok = tok
        self.by_text: dict[str, int | None] = {}
        for i in range(len(tok)):
            s = tok.decode([i])
            self.by_text[s] = None if s in self.by_text else i
        self.text = {i: s for s, i in self.by_text.items() if i is not None}

    def id(self, s: str) -> int | None:
        if s.startswith("token_id:"):
            try:
                return int(s.split(":", 1)[1])
            except ValueError:
                return None
        return self.by_text.get(s)


def _tokenizer(base_dir, adapter_dir):
    from pathlib import Path

    from transformers import AutoTokenizer

    for d in (adapter_dir, base_dir):
        p = Path(d)
        if (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
            try:
                return AutoTokenizer.from_pretrained(str(p))
            except (OSError, ValueError):
                continue
    from regraft.errors import InputError

    raise InputError(f"Cannot compute the local reference: no tokenizer in '{base_dir}' (tokenizer.json); the "
                     "served tokens cannot be mapped to the local model without it.")


def _rows(logp, served, start: int, tm: TokenMap):
    """Rows for ref_stats: served positions vs the local log-probs ``logp`` [T, V] from ``start``."""
    rows = []
    for j, pos in enumerate(served):
        lp = logp[start + j]
        top = {}
        local = {}
        for t, v in pos.top.items():
            i = tm.id(t)
            if i is not None and i < lp.shape[0]:
                top[t], local[t] = v, float(lp[i])
        arg = int(lp.argmax())
        served_arg = max(pos.top.items(), key=lambda kv: kv[1])[0] if pos.top else pos.token
        if served_arg.startswith("token_id:"):
            rows.append((top, local, f"token_id:{arg}"))
        else:
            rows.append((top, local, tm.tok.decode([arg]) if tm.id(served_arg) is not None else None))
    return rows


def local_reference(base_dir, adapter_dir, probes, ga, gb, api: str, template: str | None) -> dict:
    import torch

    from regraft.verify import _load_model, _load_peft

    tok = _tokenizer(base_dir, adapter_dir)
    tm = TokenMap(tok)
    pm, _ = _load_peft(_load_model(base_dir), adapter_dir)
    ad_rows, adbase_rows, base_rows = [], [], []
    effect, n_eff, unmapped = 0.0, 0, 0
    for p, a, b in zip(probes, ga, gb):
        text = p.text
        if api == "chat" or text is None:
            if not template:
                continue
            from regraft.rag.template import render

            text = render(template, p.messages, add_generation_prompt=True)
        prompt_ids = tok(text)["input_ids"]
        for served, on_rows in ((a.positions, True), (b.positions, False)):
            ids, m = [], len(served)
            for j, pos in enumerate(served):
                i = tm.id(pos.token)
                if i is None:
                    m = j + 1  # position j is still on a known context; later ones are not
                    unmapped += 1
                    break
                ids.append(i)
            x = torch.tensor([prompt_ids + ids[:max(0, m - 1)]])
            with torch.no_grad():
                la = torch.log_softmax(pm(input_ids=x).logits[0].float(), -1)
                with pm.disable_adapter():
                    lb = torch.log_softmax(pm(input_ids=x).logits[0].float(), -1)
            start = len(prompt_ids) - 1
            if on_rows:
                ad_rows += _rows(la, served[:m], start, tm)
                adbase_rows += _rows(lb, served[:m], start, tm)
                sl = slice(start, start + m)
                effect += float((la[sl].exp() * (la[sl] - lb[sl])).sum(-1).sum())
                n_eff += m
            else:
                base_rows += _rows(lb, served[:m], start, tm)
    return {"kind": "local", "source": f"{base_dir} + {adapter_dir} (transformers + PEFT)",
            "served_adapter": ref_stats(ad_rows, unmapped).to_dict(),
            "served_adapter_vs_local_base": ref_stats(adbase_rows).to_dict(),
            "served_base": ref_stats(base_rows).to_dict(),
            "local_effect_kl": effect / n_eff if n_eff else None}
