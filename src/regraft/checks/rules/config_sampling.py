"""RG64x: sampling defaults per mode, greedy decoding on thinking models, eos / bos / stop ids."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in d.items())


@rule("RG640", "sampling-defaults", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def sampling(ctx):
    """Sampling values that differ from the target's recommended values for the mode it will run in.

    Qwen3 recommends temperature 0.6, top_p 0.95, top_k 20, min_p 0 when thinking and 0.7 / 0.8 / 20 / 0 when not
    (Instruct-2507: 0.7 / 0.8 / 20 / 0); Qwen3-Coder's generation_config adds repetition_penalty 1.05.
    Bad:  temperature 0.6, top_p 0.95 (thinking values) on Qwen3-235B-A22B-Instruct-2507
    Good: temperature 0.7, top_p 0.8, top_k 20, min_p 0
    """
    have = ctx.cfg.sampling
    if not have:
        return
    mode = ctx.target_mode
    want = ctx.tf.sampling_for(mode)
    if want is None:
        return
    diff = {k: (have[k], v) for k, v in want.items() if k in have and abs(float(have[k]) - float(v)) > 1e-9}
    if diff:
        yield sampling.rule.finding(
            f"{mode} sampling on {ctx.target.short_name}: " + "; ".join(
                f"{ctx.cfg.where(k)} {a:g} (recommended {b:g})" for k, (a, b) in diff.items()),
            hint=f"use {_fmt(want)}", data={"recommended": want, "mode": mode})


@rule("RG641", "greedy-thinking", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def greedy(ctx):
    """Greedy decoding (temperature 0 / do_sample false) on a model that thinks.

    Qwen3 model cards: in thinking mode "DO NOT use greedy decoding, as it can lead to performance degradation and
    endless repetitions".
    Bad:  temperature 0 with Qwen3-32B (thinking by default)
    Good: temperature 0.6, top_p 0.95, top_k 20
    """
    if ctx.target_mode != "thinking" or ctx.tf.greedy_ok is not False:
        return
    t = ctx.cfg.get("temperature")
    if t == 0 or ctx.cfg.get("do_sample") is False:
        key = ctx.cfg.where("temperature") if t == 0 else ctx.cfg.where("do_sample")
        yield greedy.rule.finding(f"{key}: greedy decoding while {ctx.target.short_name} thinks (cards: endless "
                                  "repetitions)", hint="sample: temperature 0.6, top_p 0.95, top_k 20")


@rule("RG642", "stop-token-ids", area="config", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def stop_ids(ctx):
    """eos / stop token ids or stop strings that are not the target's end-of-turn tokens.

    Post-trained Qwen stops at <|im_end|> 151645; Qwen Base configs say eos 151643 (<|endoftext|>): a chat config
    copied from a Base model never stops at the end of a turn. Ids of another vocabulary (Llama 128009, Qwen3.5
    248044) mean nothing to the target.
    Bad:  stop_token_ids [151643] only, on Qwen3-32B (answers run past <|im_end|>)
    Good: [151645, 151643]
    """
    tf = ctx.tf
    vocab = ctx.target.get("vocab_size")
    ids = list(ctx.cfg.get("stop_token_ids") or []) + list(ctx.cfg.get("eos_token_id") or [])
    key = ctx.cfg.where("stop_token_ids") if ctx.cfg.has("stop_token_ids") else ctx.cfg.where("eos_token_id")
    if ids and vocab:
        bad = [i for i in ids if i >= vocab or i < 0]
        if bad:
            yield stop_ids.rule.finding(f"{key}: id(s) {bad} are outside {ctx.target.short_name}'s vocabulary "
                                        f"({vocab})", hint=f"use {tf.stop_token_ids or 'the target eos ids'}")
            return
    if ids and tf.stop_token_ids and tf.eos_token_id is not None and tf.eos_token_id not in ids:
        foreign = [i for i in ids if i not in tf.stop_token_ids]
        yield stop_ids.rule.finding(f"{key} = {ids} lacks {ctx.target.short_name}'s end-of-turn id {tf.eos_token_id}"
                                    + (f" (and {foreign} are not its stop ids)" if foreign else ""),
                                    hint=f"use {tf.stop_token_ids}", data={"want": tf.stop_token_ids})
    stops = ctx.cfg.get("stop") or []
    if stops and tf.stop_strings:
        import re

        markers = [s for s in stops if re.fullmatch(r"<\|[^|]+\|>|</s>|<end_of_turn>", s)]
        foreign = [s for s in markers if s not in tf.stop_strings]
        if foreign:
            yield stop_ids.rule.finding(f"{ctx.cfg.where('stop')}: {foreign} are not {ctx.target.short_name}'s "
                                        f"end markers {tf.stop_strings}", severity=Severity.WARNING,
                                        hint=f"use {tf.stop_strings}")
    bos = ctx.cfg.get("bos_token_id")
    if bos is not None and vocab and bos >= vocab:
        yield stop_ids.rule.finding(f"{ctx.cfg.where('bos_token_id')} = {bos} is outside the vocabulary ({vocab})")


@rule("RG643", "max-tokens", area="config", severity=Severity.WARNING, verdict=Verdict.NEEDS_PORT)
def max_tokens(ctx):
    """The answer length does not fit the context, or is below what the target's mode needs.

    Thinking models need room: Qwen3 suggests 32,768 output tokens (38,912 for hard tasks), Thinking-2507 81,920;
    a max_tokens copied from a non-thinking config truncates the reasoning before any answer.
    Bad:  max_tokens 2048 on Qwen3-235B-A22B-Thinking-2507
    Good: max_tokens 32768 or more, and a context that holds prompt + output
    """
    mt = ctx.cfg.get("max_tokens")
    if mt is None:
        return
    ctxlen = ctx.effective_context
    if ctxlen and mt >= ctxlen:
        yield max_tokens.rule.finding(f"{ctx.cfg.where('max_tokens')} = {mt:,} leaves no room for a prompt in the "
                                      f"context of {ctxlen:,}", severity=Severity.ERROR)
        return
    mode = ctx.target_mode
    advised = (ctx.tf.max_output or {}).get(mode or "")
    if mode == "thinking" and advised and mt < min(8192, advised):
        yield max_tokens.rule.finding(f"{ctx.cfg.where('max_tokens')} = {mt:,} while {ctx.target.short_name} thinks "
                                      f"(advised up to {advised:,}): reasoning is cut before the answer",
                                      hint=f"raise it towards {advised:,}")
