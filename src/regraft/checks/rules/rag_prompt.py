"""RG71x: the prompt rendered with the target's own chat template, thinking budget, stop strings, the index."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def special_strings(text: str) -> list[str]:
    """regraft.rag.tokenizer.special_strings, imported when a RAG rule runs (`check` without --rag never does)."""
    from regraft.rag.tokenizer import special_strings as find

    return find(text)


@rule("RG710", "rag-template", area="rag", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def template(ctx):
    """The prompt must render with the target's own chat template (jinja, as transformers does); a Base model has none.

    regraft renders system + user with the target's template (the model folder's, else the bundled official one)
    in jinja2's sandbox, exactly as apply_chat_template does. A Base model has no template: send a plain prompt to
    /v1/completions. A template that fails names the template and the line.
    Bad:  a chat prompt for Qwen3-30B-A3B-Base
    Good: Qwen3-30B-A3B (hybrid) or a plain completion prompt
    """
    r = ctx.rendered
    if r.kind == "chat":
        yield template.rule.finding(f"rendered with {r.template_from}"
                                    + (f" ({', '.join(f'{k}={v}' for k, v in r.kwargs.items())})" if r.kwargs else ""),
                                    severity=Severity.INFO, verdict=None, data={"example": r.example})
    elif r.kind == "plain":
        sev, verdict = (Severity.INFO, None) if ctx.tf.thinking == "base" else (Severity.WARNING, Verdict.NEEDS_PORT)
        yield template.rule.finding("prompt.format plain: sent as plain text, no chat template"
                                    + ("" if ctx.tf.thinking == "base" else
                                       f" although {ctx.target.short_name} has one"), severity=sev, verdict=verdict)
    elif r.kind == "plain-base":
        yield template.rule.finding(f"{ctx.target.short_name} is a Base model with no chat template: the prompt can "
                                    "only be sent as plain text (/v1/completions)",
                                    hint="use the post-trained model for chat; regraft port rag writes a plain prompt")
    elif r.kind == "plain-unknown":
        yield template.rule.finding(f"no chat template available for {ctx.target.short_name} (none bundled; give the "
                                    "model folder): rendering not checked, prompt overhead estimated",
                                    severity=Severity.WARNING, verdict=Verdict.UNKNOWN)
    else:
        yield template.rule.finding(str(r.error), verdict=Verdict.CANNOT,
                                    hint="fix the template, or adapt the prompt (e.g. no system role)")


@rule("RG711", "rag-special-tokens", area="rag", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def special_tokens(ctx):
    """The rendered prompt (and the setup's own text) must only use special tokens and roles the target has.

    A ChatML marker (<|im_start|>) means nothing to Llama 3 and <|eot_id|> nothing to Qwen: the text is split into
    ordinary tokens and the model never sees a turn boundary. Hard-coded markers in the setup's templates do not
    carry over between families; the system text must survive the template.
    Bad:  a user template with '<|im_start|>assistant' sent to Llama 3.1
    Good: plain text templates; let the chat template add the markers
    """
    r = ctx.rendered
    tok = ctx.tgt_tok
    s = ctx.setup
    own = special_strings((s.system or "") + "\n" + s.user)
    if own and tok.special_tokens:
        foreign = [m for m in own if m not in tok.special_tokens]
        if foreign:
            yield special_tokens.rule.finding(f"the setup's templates hard-code {foreign}, not tokens of "
                                              f"{ctx.target.short_name}", hint="remove them; the chat template adds "
                                              "the turn markers (regraft port rag does)")
        else:
            yield special_tokens.rule.finding(f"the setup's templates hard-code {own}: they fit this target but not "
                                              "other families", severity=Severity.WARNING, verdict=None)
    if r.kind != "chat" or not r.text:
        return
    used = special_strings(r.text)
    if tok.special_tokens:
        missing = [m for m in used if m not in tok.special_tokens and m not in own]
        if missing:
            yield special_tokens.rule.finding(f"the rendered prompt uses {missing}, which {tok.name} does not have: "
                                              "template and tokenizer do not belong together",
                                              verdict=Verdict.CANNOT)
    if s.system and "{context}" not in s.system and s.system.strip() and s.system.strip()[:40] not in (r.text or ""):
        yield special_tokens.rule.finding(f"{ctx.target.short_name}'s template dropped the system text",
                                          severity=Severity.WARNING, hint="merge the system text into the user turn")
    if not s.system and ctx.tf.default_system_prompt:
        yield special_tokens.rule.finding(f"no system prompt: {ctx.target.short_name}'s template inserts its default "
                                          "('You are Qwen, created by Alibaba Cloud...')", severity=Severity.INFO,
                                          verdict=None)


@rule("RG712", "rag-thinking-budget", area="rag", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def thinking_budget(ctx):
    """The thinking reserve must follow the target's protocol: thinking models need one, others free it.

    Hybrid Qwen3 thinks unless enable_thinking is false (or the prompt ends with the /no_think soft switch; the
    last /think or /no_think wins); Thinking-2507 always thinks (the template opens <think>);
    Instruct-2507 and Qwen2.5 never do. Thinking tokens come out of the same context as the answer.
    Bad:  thinking_budget 0 with Qwen3-235B-A22B-Thinking-2507
    Good: a thinking budget (Qwen: up to 32,768-81,920 output tokens), or enable_thinking false on hybrid Qwen3
    """
    s = ctx.setup
    mode = ctx.thinking_mode
    tb = s.thinking_budget
    if mode == "thinking" and not tb:
        how = ("the template opens <think> itself" if ctx.tf.template_injects_think else
               "thinking is on by default" + (" (enable_thinking not set)" if s.enable_thinking is None else ""))
        yield thinking_budget.rule.finding(f"{ctx.target.short_name} thinks ({how}) but no thinking budget is "
                                           "reserved: reasoning eats the answer budget",
                                           hint="reserve thinking tokens, or set enable_thinking false on hybrid "
                                                "models (regraft port rag does)")
    elif mode == "non-thinking" and tb:
        yield thinking_budget.rule.finding(f"{tb:,} thinking tokens reserved but {ctx.target.short_name} does not "
                                           "think here: the reserve is free for context", severity=Severity.INFO)
    sw = ctx.soft_switch
    if sw and ctx.tf.soft_switches is False:
        yield thinking_budget.rule.finding(f"the prompt uses the soft switch {sw}, which {ctx.target.short_name} "
                                           f"({ctx.tf.thinking}) does not honour: it is plain text there",
                                           severity=Severity.INFO, hint=f"remove {sw}")
    if s.enable_thinking is not None and ctx.tf.enable_thinking == "ignored":
        yield thinking_budget.rule.finding(f"{s.where('enable_thinking')} = {s.enable_thinking} is ignored by "
                                           f"{ctx.target.short_name} ({ctx.tf.thinking})", severity=Severity.INFO)


@rule("RG713", "rag-stop-strings", area="rag", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def stop_strings(ctx):
    """Stop strings that are another family's end markers.

    Bad:  stop ["<|eot_id|>"] (Llama 3) on Qwen3
    Good: ["<|im_end|>", "<|endoftext|>"] on Qwen3, or none (the runtime stops at eos)
    """
    s = ctx.setup
    want = ctx.tf.stop_strings
    markers = [x for x in s.stop if special_strings(x) == [x]]
    foreign = [m for m in markers if want and m not in want]
    if foreign:
        yield stop_strings.rule.finding(f"{s.where('stop')}: {foreign} are not {ctx.target.short_name}'s end "
                                        f"markers {want}", hint=f"use {want}")


@rule("RG714", "rag-index", area="rag", severity=Severity.INFO)
def index(ctx):
    """The index is reusable as is unless the embedding model changes; then every chunk is re-embedded.

    Changing the LLM does not touch the chunks or their vectors. Changing the embedding model (or an index built
    with another one) means re-embedding all chunks; a new chunk size means re-chunking too.
    Bad:  an index built with bge-m3 queried with e5-large vectors
    Good: keep the index when only the LLM changes
    """
    s = ctx.setup
    n = f"{s.index_chunks:,} chunks" if s.index_chunks else "all chunks"
    if s.index_embedding_model and s.embedding_model and s.index_embedding_model != s.embedding_model:
        yield index.rule.finding(f"the index was built with {s.index_embedding_model} but the setup embeds with "
                                 f"{s.embedding_model}: re-embed {n}", severity=Severity.ERROR,
                                 verdict=Verdict.NEEDS_PORT, data={"re_embed": s.index_chunks})
        return
    yield index.rule.finding(f"index reusable as is ({n}, embedding {s.embedding_model or 'not stated'}): the "
                             "embedding model does not change with the LLM", data={"re_embed": 0})
