"""RG63x: the thinking protocol (hybrid / Instruct-2507 / Thinking-2507 / Base) and the parsers that follow."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule

_PROTOCOL = {"hybrid": "hybrid thinking (enable_thinking, /think, /no_think)",
             "thinking-only": "thinking only (the template opens <think> itself)",
             "instruct-only": "non-thinking only (enable_thinking not supported)",
             "none": "no thinking mode", "base": "a Base model (no chat template)", "unknown": "unknown"}


@rule("RG630", "thinking-flag", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def thinking_flag(ctx):
    """enable_thinking, or a /think or /no_think soft switch, where the target's template does not honour it.

    Instruct-2507 never thinks ("enable_thinking=False is no longer required or supported"); Thinking-2507 always
    thinks and its template injects the opening <think>, so enable_thinking=False is ignored; Qwen2.5 and Llama
    templates ignore the flag. A Base model has no chat template at all (see RG631).
    Bad:  chat_template_kwargs {enable_thinking: true} on Qwen3-235B-A22B-Instruct-2507 (expects reasoning, gets none)
    Good: pick Thinking-2507 when thinking is needed; drop the flag otherwise
    """
    flag = ctx.thinking_flag
    tf = ctx.tf
    import re

    sw = re.findall(r"(?<![\w/])/(no_think|think)\b", ctx.cfg.get("system") or "")
    if sw and tf.soft_switches is False:
        yield thinking_flag.rule.finding(f"{ctx.cfg.where('system')} uses the soft switch /{sw[-1]}, which "
                                         f"{ctx.target.short_name} ({tf.thinking}) does not honour: plain text there",
                                         hint=f"remove /{sw[-1]}", severity=Severity.INFO)
    if flag is None or tf.enable_thinking in ("supported", "no-template", "unknown"):
        return
    if tf.thinking == "instruct-only" and flag:
        msg = "asks for thinking, but the target never thinks: no reasoning will come back"
        sev = Severity.ERROR
    elif tf.thinking == "thinking-only" and not flag:
        msg = "asks for no thinking, but the target always thinks (the template opens <think>): answers get longer"
        sev = Severity.ERROR
    else:
        msg = "is ignored by the target's template"
        sev = Severity.WARNING
    yield thinking_flag.rule.finding(f"{ctx.cfg.where('chat_template_kwargs')}.enable_thinking = {flag} {msg} "
                                     f"({ctx.target.short_name}: {_PROTOCOL[tf.thinking]})",
                                     hint="remove the flag (regraft port config does)", severity=sev)


@rule("RG631", "chat-settings-on-base", area="config", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def chat_on_base(ctx):
    """Chat settings (template kwargs, reasoning / tool parsers, chat template) for a Base model.

    Base models ship no chat template ("do not know the predefined chat template"): /v1/chat/completions fails or
    falls back to a generic format the model was not trained on; thinking and tool parsers have nothing to parse.
    Serve a Base model with /v1/completions and a plain prompt, or pick the post-trained model.
    Bad:  --reasoning-parser qwen3 and enable_thinking on Qwen3-30B-A3B-Base
    Good: Qwen3-30B-A3B (hybrid) for chat; Base only for completions / fine-tuning
    """
    if ctx.tf.thinking != "base":
        return
    keys = [k for k in ("chat_template_kwargs", "reasoning_parser", "tool_call_parser", "enable_auto_tool_choice",
                        "enable_reasoning") if ctx.cfg.get(k) not in (None, False, {})]
    if keys:
        yield chat_on_base.rule.finding(f"{', '.join(ctx.cfg.where(k) for k in keys)} set, but "
                                        f"{ctx.target.short_name} is a Base model with no chat template",
                                        hint="use /v1/completions with a plain prompt, or a post-trained model; "
                                        "regraft port config drops these")


@rule("RG632", "reasoning-parser", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def reasoning_parser(ctx):
    """The reasoning parser does not match the target's thinking output.

    Hybrid Qwen3 needs ``qwen3`` (vLLM >= 0.9.0; it copes with enable_thinking=False); Thinking-2507 outputs no
    opening <think> and the Qwen README pairs it with ``deepseek_r1`` (vLLM) / ``deepseek-r1`` (SGLang); a model
    that never thinks needs none. ``--enable-reasoning`` is no longer needed since vLLM 0.9.0 (Qwen docs).
    Bad:  no reasoning parser on Qwen3-32B (the <think> block lands in content)
    Good: --reasoning-parser qwen3
    """
    tf = ctx.tf
    rt = ctx.runtime
    have = ctx.cfg.get("reasoning_parser") or (ctx.cfg.get("reasoning_format") if rt == "llama.cpp" else None)
    if tf.thinking in ("base", "unknown") or rt not in ("vllm", "sglang", "llama.cpp"):
        return
    where = ctx.cfg.where("reasoning_parser") if ctx.cfg.has("reasoning_parser") else ctx.cfg.where("reasoning_format")
    if tf.thinking in ("instruct-only", "none"):
        if have:
            yield reasoning_parser.rule.finding(f"{where} = {have} but {ctx.target.short_name} never thinks",
                                                hint="remove it", severity=Severity.INFO)
        return
    want = tf.parser(rt)
    if want is None:
        if tf.reasoning_parser is None and have is None:
            yield reasoning_parser.rule.finding(f"{ctx.target.short_name} thinks but regraft knows no documented "
                                                f"{rt} reasoning parser for it", severity=Severity.INFO,
                                                verdict=Verdict.UNKNOWN)
        return
    if have is None:
        yield reasoning_parser.rule.finding(f"no reasoning parser: {ctx.target.short_name}'s <think> output lands in "
                                            "the answer content", hint=f"set reasoning parser '{want}'")
    elif have.replace("-", "_") != want.replace("-", "_"):
        yield reasoning_parser.rule.finding(f"{where} = {have}; {ctx.target.short_name} is documented with "
                                            f"'{want}'", hint=f"use '{want}'")
    if ctx.cfg.get("enable_reasoning") and rt == "vllm":
        yield reasoning_parser.rule.finding(f"'{ctx.cfg.where('enable_reasoning')}' is not needed since vLLM 0.9.0 "
                                            "(--reasoning-parser alone enables it)", severity=Severity.INFO,
                                            verdict=Verdict.NEEDS_RELAYOUT, hint="drop it")


@rule("RG633", "thinking-behaviour-change", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def behaviour_change(ctx):
    """The same config makes the target think where the source did not (or the reverse).

    Moving from Instruct-2507 or Qwen2.5 (never think) to a hybrid Qwen3 turns thinking on by default: answers
    start with a <think> block, latency and token use grow; moving from hybrid to Instruct-2507 loses thinking.
    Bad:  an Instruct-2507 config, unchanged, on Qwen3-32B
    Good: add chat_template_kwargs {enable_thinking: false} to keep non-thinking answers
    """
    if ctx.sf is None:
        return
    s_mode, t_mode = ctx.source_mode, ctx.target_mode
    if s_mode is None or t_mode is None or s_mode == t_mode or ctx.tf.thinking == "base":
        return
    if t_mode == "thinking" and ctx.tf.thinking == "hybrid":
        hint = "set chat_template_kwargs {enable_thinking: false} to keep non-thinking answers (port config does)"
    elif t_mode == "thinking":
        hint = "the target always thinks; budget for reasoning tokens and set a reasoning parser"
    else:
        hint = "the target does not think; use a thinking model if reasoning is needed"
    yield behaviour_change.rule.finding(f"{ctx.source.short_name} ran this config {s_mode}; "
                                        f"{ctx.target.short_name} runs it {t_mode}", hint=hint,
                                        data={"source_mode": s_mode, "target_mode": t_mode})
