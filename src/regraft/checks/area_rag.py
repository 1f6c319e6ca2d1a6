"""The RAG column: does a RAG setup built for SOURCE work on TARGET (tokenizer, budget, template, index).

Registers ``AREA_RUNNERS["rag"]``. The setup file is read once per path; tokenizers are loaded (and the bundled
Qwen tokenizer built) only here, never for plain `check`. Rules are pure functions of a :class:`RagContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from regraft.checks.engine import AREA_RUNNERS, run_rules
from regraft.checks.finding import AreaResult, Verdict
from regraft.configs.facts import PairFacts
from regraft.inspection.model import ModelSpec
from regraft.rag.budget import Budget, ChunkMeasure, chunk_tokens_on_target, worst_quality
from regraft.rag.setup import RagSetup, fill, read_rag
from regraft.rag.template import TemplateError, render, special_tokens_for, template_for
from regraft.rag.tokenizer import TokenCounter, same_vocabulary, tokenizer_for, vocab_family

CONTEXT_MARK = "\u0000CONTEXT\u0000"
QUESTION_MARK = "\u0000QUESTION\u0000"


@dataclass
class Rendered:
    text: str | None  # the rendered prompt with empty context/question (None when it could not be rendered)
    example: str | None  # rendered with {context} / {question} markers, for display and porting
    template_from: str  # where the template came from ("" when none)
    kind: str  # chat | plain-base | plain-unknown | error
    error: TemplateError | None = None
    kwargs: dict | None = None


@dataclass
class RagContext(PairFacts):
    source: ModelSpec | None
    target: ModelSpec
    setup: RagSetup

    @cached_property
    def tgt_tok(self) -> TokenCounter:
        return tokenizer_for(self.target)

    @cached_property
    def chunk_model(self) -> ModelSpec | None:
        """The model whose tokenizer counted the chunks: chunking.tokenizer, else the source."""
        name = self.setup.chunk_tokenizer
        if name:
            from regraft.errors import RegraftError
            from regraft.inspection.resolve import resolve_model

            try:
                return resolve_model(name, use_hub=False)
            except RegraftError:
                return None
        return self.source

    @cached_property
    def src_tok(self) -> TokenCounter | None:
        return tokenizer_for(self.chunk_model) if self.chunk_model is not None else None

    @cached_property
    def same_vocab(self) -> bool | None:
        return same_vocabulary(self.chunk_model, self.target) if self.chunk_model is not None else None

    @cached_property
    def samples(self) -> list[str]:
        return self.setup.sample_texts()

    @cached_property
    def chunk(self) -> ChunkMeasure:
        return chunk_tokens_on_target(self.setup.chunk_size, self.setup.chunk_unit, self.src_tok, self.tgt_tok,
                                      self.samples, self.same_vocab)

    @property
    def soft_switch(self) -> str | None:
        """'/think' or '/no_think' written in the setup's prompts (Qwen3 hybrid soft switches; the last one wins)."""
        import re

        text = (self.setup.system or "") + "\n" + self.setup.user
        found = re.findall(r"(?<![\w/])/(no_think|think)\b", text)
        return "/" + found[-1] if found else None

    @property
    def thinking_mode(self) -> str | None:
        flag = self.setup.enable_thinking
        if flag is None and self.tf.soft_switches and self.tf.thinking == "hybrid" and self.soft_switch:
            flag = self.soft_switch == "/think"
        return self.tf.mode(flag)

    @cached_property
    def template_kwargs(self) -> dict:
        kw = {}
        if self.tf.thinking == "hybrid" and self.setup.enable_thinking is not None:
            kw["enable_thinking"] = self.setup.enable_thinking
        return kw

    def messages(self, context: str, question: str) -> list[dict]:
        s = self.setup
        msgs = []
        if s.system:
            msgs.append({"role": "system", "content": fill(s.system, context, question)})
        msgs.append({"role": "user", "content": fill(s.user, context, question)})
        return msgs

    @cached_property
    def rendered(self) -> Rendered:
        src, where = template_for(self.target)
        s = self.setup
        if s.prompt_format == "plain" or src is None:
            plain = "\n\n".join(x for x in (fill(s.system, "", ""), fill(s.user, "", "")) if x)
            example = "\n\n".join(x for x in (s.system, s.user) if x)
            kind = ("plain" if s.prompt_format == "plain" else "plain-base" if self.tf.thinking == "base"
                    else "plain-unknown")
            return Rendered(plain, example, "", kind)
        special = special_tokens_for(self.target, "qwen2-base" if self.tf.thinking == "base" else
                                     vocab_family(self.target))
        name = (where.split(" (")[0].replace("bundled ", "") if where.startswith("bundled")
                else f"{self.target.short_name} (its own template)")
        try:
            text = render(src, self.messages("", ""), name=name, special_tokens=special, **self.template_kwargs)
            example = render(src, self.messages(CONTEXT_MARK, QUESTION_MARK), name=name, special_tokens=special,
                             **self.template_kwargs)
            example = example.replace(CONTEXT_MARK, "{context}").replace(QUESTION_MARK, "{question}")
        except TemplateError as e:
            return Rendered(None, None, where, "error", e, self.template_kwargs)
        return Rendered(text, example, where, "chat", None, self.template_kwargs)

    @property
    def usable(self) -> tuple[int | None, str]:
        s = self.setup
        native = self.tf.native_context or self.target.get("max_position_embeddings")
        if s.context_length:
            top = self.tf.max_context or native
            if top and s.context_length > top:
                return top, f"{self.target.short_name}'s maximum (setup asks {s.context_length:,})"
            return s.context_length, f"{s.where('context_length')}"
        if native is None:
            return None, "unknown"
        return native, f"{self.target.short_name}'s native context"

    @cached_property
    def budget(self) -> Budget | None:
        usable, frm = self.usable
        r = self.rendered
        if usable is None or r.text is None:
            return None
        s = self.setup
        overhead = self.tgt_tok.count(r.text)
        sep = self.tgt_tok.count(s.separator) if s.separator else 0
        thinking = s.thinking_budget or 0
        if self.thinking_mode != "thinking":
            thinking = 0 if s.thinking_budget is None else s.thinking_budget
        parts = {"chunk": self.chunk.quality, "prompt": self.tgt_tok.quality,
                 "template": "exact" if r.kind in ("chat", "plain-base", "plain") else "estimate"}
        return Budget(usable, frm, overhead, self.chunk.tokens, s.top_k, sep, s.question_tokens,
                      s.answer_tokens or 0, thinking, worst_quality(parts.values()), parts)


def run_rag(source: ModelSpec | None, target: ModelSpec, options: dict) -> AreaResult:
    from regraft.errors import RegraftError
    from regraft.inspection.resolve import resolve_model

    setup = read_rag(options["rag"])
    src = source
    if src is None and setup.model:
        try:
            src = resolve_model(setup.model, use_hub=False)
        except RegraftError:
            src = None
    ctx = RagContext(src, target, setup)
    select, ignore = options.get("select"), options.get("ignore")
    findings, verdict = run_rules("rag", ctx, select, ignore)
    b = ctx.budget
    if b is not None:
        summary = f"{b.total:,}/{b.usable:,} tokens, margin {b.margin:,}" + (
            "" if b.quality in ("exact", "measured") else f" ({b.quality})")
    else:
        summary = "budget not computed"
    return AreaResult("rag", verdict, findings, [], summary)


AREA_RUNNERS["rag"] = run_rag

__all__ = ["RagContext", "Verdict", "run_rag"]
