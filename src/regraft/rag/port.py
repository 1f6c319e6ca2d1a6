"""Rewrite a RAG setup for a target: re-rendered prompt, top_k / chunk size re-budgeted, one reason per change."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from regraft.configs.port import Change
from regraft.rag.setup import RagSetup

MIN_THINKING = 8192  # regraft's floor when it must make room for thinking (the cards advise up to 32,768-81,920)


@dataclass
class RagPortResult:
    source: str | None
    target: str
    setup: RagSetup
    changes: list[Change] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    budget: dict | None = None

    def diff_text(self) -> str:
        lines = [c.text() for c in self.changes] or ["(no setting changed)"]
        lines += [f"? {k}: left out: {why}" for k, why in self.left_out]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "changes": [c.to_dict() for c in self.changes],
                "left_out": [{"key": k, "why": w} for k, w in self.left_out], "notes": self.notes,
                "budget": self.budget, "setup": to_doc(self.setup)}


def plan_rag(setup: RagSetup, source, target, embedding: str | None = None) -> RagPortResult:
    from regraft.checks.area_rag import RagContext

    new = dataclasses.replace(setup, unknown=[], given=dict(setup.given), stop=list(setup.stop))
    res = RagPortResult(source.name if source else None, target.name, new)

    def change(attr, value, reason, key=None):
        old = getattr(new, attr)
        if old == value:
            return
        setattr(new, attr, value)
        res.changes.append(Change(key or _key(attr), old, value, reason))

    probe = RagContext(source, target, setup)
    tf = probe.tf
    change("model", target.name, "the target model")
    # which tokenizer counted the chunks (so later checks re-measure against the right one)
    if setup.chunk_unit == "tokens" and probe.chunk_model is not None and not probe.same_vocab:
        change("chunk_tokenizer", probe.chunk_model.name, "the chunk size was counted with this tokenizer; the index "
                                                          "keeps those chunks")
    # embedding
    if embedding and embedding != setup.embedding_model:
        change("embedding_model", embedding, "requested with --embedding")
        n = f"{setup.index_chunks:,}" if setup.index_chunks else "all"
        res.notes.append(f"re-embed {n} chunks with {embedding} (the index was built with "
                         f"{setup.index_embedding_model or setup.embedding_model})")
        change("index_embedding_model", None, f"the index must be rebuilt with {embedding}", key="index.embedding_model")
    # thinking protocol
    s_mode = probe.sf.mode(setup.enable_thinking) if probe.sf else None
    if tf.thinking == "hybrid" and setup.enable_thinking is None and (s_mode in (None, "non-thinking")) \
            and not setup.thinking_budget:
        change("enable_thinking", False, f"{target.short_name} thinks by default; the setup reserves no thinking "
                                         "budget")
    elif tf.enable_thinking == "ignored" and setup.enable_thinking is not None:
        change("enable_thinking", None, f"{target.short_name}'s template ignores it ({tf.thinking})")
    t_mode = tf.mode(new.enable_thinking)
    if t_mode == "non-thinking" and new.thinking_budget:
        change("thinking_budget", 0, f"{target.short_name} does not think here: the reserve is free")
    # stop strings
    if new.stop and tf.stop_strings:
        from regraft.rag.tokenizer import special_strings

        markers = [x for x in new.stop if special_strings(x) == [x]]
        if any(m not in tf.stop_strings for m in markers):
            change("stop", [x for x in new.stop if x not in markers] + list(tf.stop_strings),
                   f"{target.short_name}'s end markers")
    # hard-coded turn markers of another family: the target's chat template adds its own
    if probe.tgt_tok.special_tokens or tf.stop_strings:
        for attr in ("system", "user"):
            text = getattr(new, attr)
            if text:
                cleaned = strip_foreign_markers(text, probe.tgt_tok.special_tokens)
                if cleaned != text:
                    change(attr, cleaned, f"removed turn markers that are not tokens of {target.short_name}; its chat "
                                          "template adds its own")
    # base: plain prompt
    if tf.thinking == "base" and new.prompt_format != "plain":
        change("prompt_format", "plain", f"{target.short_name} is a Base model with no chat template")
    elif tf.thinking != "base" and new.prompt_format == "plain" and tf.chat_template:
        change("prompt_format", "chat", f"{target.short_name} has a chat template")
    # budget
    ctx = RagContext(source, target, new)
    b = ctx.budget
    if b is not None:
        if t_mode == "thinking" and not new.thinking_budget:
            advised = (tf.max_output or {}).get("thinking") or MIN_THINKING
            want = min(advised, max(b.margin, 0))
            want = max(want, min(MIN_THINKING, advised))
            change("thinking_budget", want, f"{target.short_name} thinks; reserve for reasoning (cards advise up to "
                                            f"{advised:,} output tokens)")
            ctx = RagContext(source, target, new)
            b = ctx.budget
        if b.margin < 0:
            k = b.max_top_k()
            if k >= 1:
                change("top_k", k, f"{b.total:,} tokens exceed the usable {b.usable:,}: top_k {k} fits "
                                   f"({b.chunk_tokens:,} tokens per chunk on {target.short_name})")
            else:
                room = b.usable - (b.overhead + b.question + b.answer + b.thinking)
                if room <= 0:
                    res.notes.append(f"even top_k 1 does not fit: prompt + question + answer + thinking = "
                                     f"{b.total - b.context_tokens:,} of {b.usable:,}; lower answer/thinking tokens")
                else:
                    per_unit = b.chunk_tokens / new.chunk_size
                    size = max(1, math.floor(room / per_unit))
                    old = new.chunk_size
                    change("top_k", 1, "only one chunk fits")
                    change("chunk_size", size, f"one chunk must fit {room:,} tokens")
                    if new.chunk_overlap >= size:
                        change("chunk_overlap", size // 8, "smaller than the new chunk size")
                    n = (f"~{math.ceil(setup.index_chunks * old / size):,}" if setup.index_chunks else "all")
                    res.notes.append(f"re-chunk and re-embed: {n} chunks at {size} {new.chunk_unit}")
            ctx = RagContext(source, target, new)
            b = ctx.budget
        elif b.max_top_k() > new.top_k:
            res.notes.append(f"room for top_k up to {b.max_top_k()} on {target.short_name} (not raised: retrieval "
                             "quality is yours to judge)")
        res.budget = b.to_dict() if b else None
    # a template that refuses the system role (e.g. Gemma 2): fold the system text into the user turn
    r = ctx.rendered
    if r.error is not None and new.system:
        trial = dataclasses.replace(new, system=None, user=new.system.rstrip() + "\n\n" + new.user)
        tctx = RagContext(source, target, trial)
        if tctx.rendered.error is None:
            res.changes.append(Change("prompt.system", new.system, None, f"{target.short_name}'s template refuses "
                                      f"the system role ({r.error.what}); the text now opens the user turn"))
            res.changes.append(Change("prompt.user", new.user, trial.user, "system text folded in"))
            new.system, new.user = None, trial.user
            ctx = tctx
            r = ctx.rendered
            res.budget = ctx.budget.to_dict() if ctx.budget else res.budget
    # re-rendered prompt
    if r.example is not None:
        new.rendered_example = r.example
        new.template_from = r.template_from or ("plain text" if r.kind.startswith("plain") else None)
        res.changes.append(Change("prompt.rendered_example", setup.rendered_example and "(previous)",
                                  f"({len(r.example)} characters)", f"rendered with {new.template_from}"))
    elif r.error is not None:
        res.notes.append(f"the prompt does not render on {target.short_name}: {r.error}")
    elif r.kind == "plain-unknown":
        res.left_out.append(("prompt.rendered_example", f"no chat template available for {target.short_name}"))
    for key, why in setup.unknown:
        res.left_out.append((key, f"unknown key ({why}); not carried over"))
    if ctx.chunk.quality in ("estimate", "approximate"):
        res.notes.append(f"token numbers are {ctx.chunk.quality}: {ctx.chunk.how}")
    return res


_HEADER_RES = [r"<\|start_header_id\|>\w+<\|end_header_id\|>\n*", r"<\|im_start\|>\w+\n?",
               r"<start_of_turn>\w+\n?", r"\[/?INST\]\s?"]


def strip_foreign_markers(text: str, target_tokens: dict) -> str:
    """Remove chat-turn markers (Llama 3, ChatML, Gemma, Mistral) that the target's tokenizer does not have."""
    import re

    from regraft.rag.tokenizer import special_strings

    out = text
    for pat in _HEADER_RES:
        for m in set(re.findall(pat, out)):
            if any(tok not in target_tokens for tok in special_strings(m)) or not special_strings(m):
                out = out.replace(m, "")
    for tok in special_strings(out):
        if tok not in target_tokens:
            out = out.replace(tok, "")
    return out.strip("\n") if out != text else text


_KEYS = {
    "model": "model", "embedding_model": "embedding.model", "embedding_dims": "embedding.dimensions",
    "chunk_size": "chunking.size", "chunk_unit": "chunking.unit", "chunk_overlap": "chunking.overlap",
    "chunk_tokenizer": "chunking.tokenizer", "top_k": "retrieval.top_k", "system": "prompt.system",
    "user": "prompt.user", "separator": "prompt.separator", "chunk_template": "prompt.chunk_template",
    "question_tokens": "prompt.question_tokens", "prompt_format": "prompt.format",
    "template_from": "prompt.template", "rendered_example": "prompt.rendered_example",
    "answer_tokens": "generation.answer_tokens", "thinking_budget": "generation.thinking_budget",
    "enable_thinking": "generation.enable_thinking", "stop": "generation.stop",
    "context_length": "generation.context_length", "index_chunks": "index.chunks",
    "index_embedding_model": "index.embedding_model", "index_path": "index.path", "samples": "samples",
}


def _key(attr: str) -> str:
    return _KEYS.get(attr, attr)


def to_doc(s: RagSetup) -> dict:
    doc: dict = {}
    for attr, key in _KEYS.items():
        v = getattr(s, attr)
        if v is None or v == [] or (attr == "prompt_format" and v == "chat"):
            continue
        if "." in key:
            sec, k = key.split(".", 1)
            doc.setdefault(sec, {})[k] = v
        else:
            doc[key] = v
    return doc
