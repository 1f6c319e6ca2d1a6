"""Teachers for distillation: source+adapter in process (the default) or an OpenAI-compatible endpoint.

A teacher turns prompts into `TeacherItem`s: the greedy completion (token ids in the *student's* tokenizer), the
teacher's top-k log-probabilities at each completion position (and the end token), and the source base's
log-probabilities of the same tokens (for TiTok excess and the delta teacher).

`EndpointTeacher` speaks the OpenAI ``/v1/completions`` protocol with ``logprobs: k`` (vLLM, SGLang, llama-server):
``model`` names the served source+adapter (vLLM ``--lora-modules name=path``) and ``base_model`` the served base.
Token strings map to ids with vLLM's ``--return-tokens-as-token-ids`` (``token_id:123``) or the tokenizer.
"""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

import torch

from regraft.port.fidelity import _pad


def _cut_at_stop(row: list[int], stop) -> list[int]:
    """A greedy completion up to and including its first stop token (all of it when none)."""
    cut = next((j for j, t in enumerate(row) if t in stop), None)
    return row[:cut + 1] if cut is not None else row


def _pick(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, generator=None) -> torch.Tensor:
    """Next token per row: argmax when ``temperature`` is 0, else a nucleus (top-p) sample at that temperature."""
    if temperature <= 0:
        return logits.argmax(-1)
    p = torch.softmax(logits.float() / temperature, -1).cpu()
    sp, si = p.sort(-1, descending=True)
    sp = sp * ((sp.cumsum(-1) - sp) < top_p)  # keep the smallest prefix whose mass reaches top_p
    pick = torch.multinomial(sp / sp.sum(-1, keepdim=True), 1, generator=generator)
    return si.gather(-1, pick)[:, 0].to(logits.device)


@dataclass
class TeacherItem:
    prompt: str
    prompt_ids: list
    comp_ids: list  # teacher's greedy completion, end token included when produced
    top_idx: torch.Tensor  # L x k (long)
    top_logp: torch.Tensor  # L x k, teacher log-probs
    base_logp: torch.Tensor  # L x k, source-base log-probs at top_idx (for the delta teacher)
    excess: torch.Tensor  # L, log p_{S+A}(y_i) - log p_S(y_i)

    @property
    def text(self) -> str:
        return self.prompt



def _length_chunks(tok, prompts: list[str], batch: int) -> tuple[list[list[int]], list[list[int]]]:
    """(token ids of each prompt, batches of prompt indices of one length each): greedy decoding without padding."""
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    groups = defaultdict(list)
    for i, e in enumerate(enc):
        groups[len(e)].append(i)
    return enc, [idx[s:s + batch] for _, idx in sorted(groups.items()) for s in range(0, len(idx), batch)]

class LocalTeacher:
    """Source + adapter in this process; greedy decoding grouped by prompt length (no padding)."""

    def __init__(self, source_dir, adapter_dir, tokenizer, stop_ids=(), k: int = 20, dev=None):
        from peft import PeftModel

        from regraft.port.models import load_model

        self.model = PeftModel.from_pretrained(load_model(source_dir, dev), str(adapter_dir)).eval()
        self.tok = tokenizer
        self.k = k
        self.stop = set(stop_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.calls = 0

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new: int = 24, batch: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, generator=None) -> list[list[int]]:
        """Completions (token ids, cut after the first stop token): greedy, or sampled with ``temperature`` > 0."""
        enc, chunks = _length_chunks(self.tok, prompts, batch)
        out = [None] * len(prompts)
        dev = self.model.device
        for ch in chunks:
            x = torch.tensor([enc[i] for i in ch], device=dev)
            gen, done = [], torch.zeros(len(ch), dtype=torch.bool, device=dev)
            for _ in range(max_new):
                nxt = _pick(self.model(input_ids=x).logits[:, -1], temperature, top_p, generator)
                gen.append(nxt)
                for t in self.stop:
                    done |= nxt == t
                x = torch.cat([x, nxt[:, None]], 1)
                if bool(done.all()):
                    break
            for r, i in zip(torch.stack(gen, 1).tolist(), ch):
                out[i] = _cut_at_stop(r, self.stop)
        self.calls += len(prompts)
        return out

    @torch.no_grad()
    def label(self, prompts: list[str], max_new: int = 24, batch: int = 64, prog=None) -> list[TeacherItem]:
        comps = self.generate(prompts, max_new)
        items = []
        task = prog.add_task("teacher log-probs", total=len(prompts)) if prog is not None else None
        for s in range(0, len(prompts), batch):
            chunk = [i for i in range(s, min(s + batch, len(prompts))) if comps[i]]
            p_ids = {i: self.tok(prompts[i], add_special_tokens=False)["input_ids"] for i in chunk}
            seqs = [p_ids[i] + comps[i] for i in chunk]
            if seqs:  # right padding + attention mask: positions before the padding are exact
                x, m = _pad(seqs)
                x, m = x.to(self.model.device), m.to(self.model.device)
                LP = torch.log_softmax(self.model(input_ids=x, attention_mask=m).logits.float(), -1).cpu()
                with self.model.disable_adapter():
                    LB = torch.log_softmax(self.model(input_ids=x, attention_mask=m).logits.float(), -1).cpu()
            for r, i in enumerate(chunk):
                c, n = comps[i], len(p_ids[i])
                lp, lb = LP[r, n - 1:n - 1 + len(c)], LB[r, n - 1:n - 1 + len(c)]
                tv, ti = lp.topk(min(self.k, lp.shape[-1]), -1)
                ct = torch.tensor(c)
                exc = lp.gather(1, ct[:, None])[:, 0] - lb.gather(1, ct[:, None])[:, 0]
                items.append(TeacherItem(prompts[i], p_ids[i], c, ti, tv, lb.gather(1, ti), exc))
            if task is not None:
                prog.update(task, advance=min(batch, len(prompts) - s))
        return items


class EndpointTeacher:
    """An OpenAI-compatible completions endpoint serving source+adapter (``model``) and the source (``base_model``)."""

    def __init__(self, base_url: str, model: str, tokenizer, base_model: str | None = None, k: int = 20,
                 api_key: str | None = None, timeout: float = 120.0, base_k: int | None = None):
        self.url = base_url.rstrip("/") + ("/completions" if base_url.rstrip("/").endswith("/v1") else
                                           "/v1/completions")
        self.model, self.base_model, self.tok, self.k = model, base_model, tokenizer, k
        self.api_key, self.timeout = api_key, timeout
        # the base's log-probs at the teacher's top-k ids are only known where they fall in the base's own top
        # base_k (plus the given token); elsewhere they are floored to its smallest returned value (a bound that
        # only the delta teacher uses). Raise base_k up to the server's max_logprobs for exactness.
        self.base_k = base_k or k
        self.calls = 0

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            self.calls += 1
            return json.loads(r.read())

    def _id(self, tok: str) -> int:
        if tok.startswith("token_id:"):
            return int(tok.split(":", 1)[1])
        i = self.tok.convert_tokens_to_ids(tok)
        if i is None or i == self.tok.unk_token_id:
            ids = self.tok(tok, add_special_tokens=False)["input_ids"]
            i = ids[0] if ids else 0
        return int(i)

    def _echo(self, model: str, text, L: int, k: int | None = None):
        """Top-k log-probs and the log-prob of each given token at the last L positions of ``text`` (echo; ``text``
        may be a list of token ids, which the OpenAI protocol and vLLM accept: exact alignment, no re-tokenising)."""
        e = self._post({"model": model, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": k or self.k,
                        "temperature": 0})
        lp = e["choices"][0].get("logprobs") or {}
        return (lp.get("top_logprobs") or [])[-L:], (lp.get("token_logprobs") or [])[-L:]

    def label(self, prompts: list[str], max_new: int = 24, prog=None, **_) -> list[TeacherItem]:
        """Per prompt: a greedy generation, then echo calls on prompt+completion(+end token) for source+adapter
        and the base, so every completion position, the end token's included, has top-k log-probs (servers do
        not return log-probs for a stop token they strip)."""
        items = []
        task = prog.add_task("teacher (endpoint)", total=len(prompts)) if prog is not None else None
        for p in prompts:
            d = self._post({"model": self.model, "prompt": p, "max_tokens": max_new, "temperature": 0,
                            "logprobs": 1})
            ch = d["choices"][0]
            c = [self._id(t) for t in ((ch.get("logprobs") or {}).get("tokens") or [])]
            if ch.get("finish_reason") == "stop" and self.tok.eos_token_id is not None and (
                    not c or c[-1] != self.tok.eos_token_id):
                c.append(self.tok.eos_token_id)
            if not c:
                continue
            L = len(c)
            p_ids = self.tok(p, add_special_tokens=False)["input_ids"]
            text = p_ids + c
            tops, tok_lp = self._echo(self.model, text, L)
            ti = torch.zeros(L, self.k, dtype=torch.long)
            tv = torch.full((L, self.k), -1e4)
            for r, top in enumerate(tops[:L]):
                for j, (t, v) in enumerate(sorted((top or {}).items(), key=lambda kv: -kv[1])[:self.k]):
                    ti[r, j], tv[r, j] = self._id(t), float(v)
            lb = torch.full((L, self.k), -1e4)
            exc = torch.zeros(L)
            if self.base_model:
                btops, bt = self._echo(self.base_model, text, L, self.base_k)
                for r in range(min(L, len(btops))):
                    m = {self._id(t): v for t, v in (btops[r] or {}).items()}
                    floor = min(m.values()) if m else -1e4
                    for j in range(self.k):
                        lb[r, j] = m.get(int(ti[r, j]), floor)
                    if r < len(tok_lp) and r < len(bt) and tok_lp[r] is not None and bt[r] is not None:
                        exc[r] = float(tok_lp[r]) - float(bt[r])
            items.append(TeacherItem(p, p_ids, c, ti, tv, lb, exc))
            if task is not None:
                prog.update(task, advance=1)
        return items


class StreamedTeacher(LocalTeacher):
    """`LocalTeacher` with the source read layer by layer (`stream.StreamedModel`) and the adapter applied as
    forward hooks: the source is never whole in memory (peak ~ one decoder layer + the batch's hidden states).
    Greedy decoding recomputes the prefix at every step (no KV cache) and runs one pass over the layers per step
    for all prompt-length groups together; slower than `LocalTeacher`, bounded in memory. Same labels (the tests
    compare). `usable(adapter_dir)` says whether every adapter module can be applied as a hook (dense LoRA in
    decoder layers, no DoRA); otherwise use `LocalTeacher`."""

    def __init__(self, source_dir, adapter_dir, tokenizer, stop_ids=(), k: int = 20, dev=None):
        from regraft.port.stream import StreamedModel, adapter_layer_factors

        self.sm = StreamedModel(source_dir, dev)
        self.factors, bad = adapter_layer_factors(adapter_dir)
        if bad:
            raise ValueError(f"adapter modules that a streamed forward cannot apply: {bad[:3]}")
        self.tok = tokenizer
        self.k = k
        self.stop = set(stop_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.calls = 0

    @staticmethod
    def usable(adapter_dir) -> bool:
        from regraft.port.stream import adapter_layer_factors

        try:
            return not adapter_layer_factors(adapter_dir)[1]
        except Exception:  # noqa: BLE001
            return False

    def _final_hidden(self, batches, masks=None, adapter: bool = True):
        from regraft.port.stream import forward_layers, lora_hooks

        hooks = []

        def before(i, layer):
            if adapter:
                hooks.extend(lora_hooks(layer, self.factors.get(i, {})))

        def after(i, layer):
            for h in hooks:
                h.remove()
            hooks.clear()

        hs = forward_layers(self.sm, batches, attention_masks=masks, before_layer=before, after_layer=after)
        norm = self.sm.final_norm()
        return [norm(h) for h in hs]

    def _logits(self, h):
        return torch.nn.functional.linear(h, self.sm.lm_head())

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new: int = 24, batch: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, generator=None) -> list[list[int]]:
        enc, chunks = _length_chunks(self.tok, prompts, batch)
        xs = [torch.tensor([enc[i] for i in ch]) for ch in chunks]
        gens = [[] for _ in chunks]
        done = [torch.zeros(len(ch), dtype=torch.bool) for ch in chunks]
        for _ in range(max_new):
            live = [c for c in range(len(chunks)) if not bool(done[c].all())]
            if not live:
                break
            hs = self._final_hidden([xs[c] for c in live])
            for c, h in zip(live, hs):
                nxt = _pick(self._logits(h[:, -1:])[:, 0], temperature, top_p, generator).cpu()
                gens[c].append(nxt)
                for t in self.stop:
                    done[c] |= nxt == t
                xs[c] = torch.cat([xs[c], nxt[:, None]], 1)
        out = [None] * len(prompts)
        for c, ch in enumerate(chunks):
            for r, i in zip(torch.stack(gens[c], 1).tolist(), ch):
                out[i] = _cut_at_stop(r, self.stop)
        self.calls += len(prompts)
        return out

    @torch.no_grad()
    def label(self, prompts: list[str], max_new: int = 24, batch: int = 64, prog=None) -> list[TeacherItem]:
        comps = self.generate(prompts, max_new)
        task = prog.add_task("teacher log-probs (streamed)", total=len(prompts)) if prog is not None else None
        chunks, xs, ms, pids = [], [], [], []
        for s in range(0, len(prompts), batch):
            chunk = [i for i in range(s, min(s + batch, len(prompts))) if comps[i]]
            if not chunk:
                continue
            p_ids = {i: self.tok(prompts[i], add_special_tokens=False)["input_ids"] for i in chunk}
            seqs = [p_ids[i] + comps[i] for i in chunk]
            x, m = _pad(seqs)
            chunks.append(chunk)
            xs.append(x)
            ms.append(m)
            pids.append(p_ids)
        HA = self._final_hidden(xs, ms, adapter=True)
        HB = self._final_hidden(xs, ms, adapter=False)
        items = {}
        for chunk, p_ids, ha, hb in zip(chunks, pids, HA, HB):
            LP = torch.log_softmax(self._logits(ha).float(), -1).cpu()
            LB = torch.log_softmax(self._logits(hb).float(), -1).cpu()
            for r, i in enumerate(chunk):
                c, n = comps[i], len(p_ids[i])
                lp, lb = LP[r, n - 1:n - 1 + len(c)], LB[r, n - 1:n - 1 + len(c)]
                tv, ti = lp.topk(min(self.k, lp.shape[-1]), -1)
                ct = torch.tensor(c)
                exc = lp.gather(1, ct[:, None])[:, 0] - lb.gather(1, ct[:, None])[:, 0]
                items[i] = TeacherItem(prompts[i], p_ids[i], c, ti, tv, lb.gather(1, ti), exc)
            if task is not None:
                prog.update(task, advance=len(chunk))
        return [items[i] for i in sorted(items)]

    def free(self) -> None:
        self.sm.free()


def in_process(source_dir, adapter_dir, tok, stream: bool = True, k: int = 20, dev=None):
    """(teacher, note): the source+adapter in this process, streamed layer by layer when every adapter module can
    be applied as a hook (`StreamedTeacher`), else loaded whole (`LocalTeacher`, with a note saying so)."""
    stop = [i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None]
    if stream and StreamedTeacher.usable(adapter_dir):
        return StreamedTeacher(source_dir, adapter_dir, tok, stop_ids=stop, k=k, dev=dev), None
    note = ("teacher loads the source whole (adapter modules a streamed forward cannot apply)" if stream else None)
    return LocalTeacher(source_dir, adapter_dir, tok, stop_ids=stop, k=k, dev=dev), note
