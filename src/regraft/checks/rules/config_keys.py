"""RG60x: what the config file says and what regraft knows about the target (unknown keys, missing facts)."""

from __future__ import annotations

from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


@rule("RG601", "config-unknown-key", area="config", severity=Severity.WARNING)
def unknown_keys(ctx):
    """A key in the config file that regraft does not know for this format: reported, never silently ignored.

    A misspelt key (``max_model_length``) is ignored by some runtimes and fatal in others; either way the setting
    the user meant is not applied. regraft checks nothing it does not understand and says so.
    Bad:  max-model-length: 65536   (vLLM's flag is --max-model-len)
    Good: max-model-len: 65536
    """
    for key, why in ctx.cfg.unknown:
        yield unknown_keys.rule.finding(f"{ctx.cfg.path.name}: '{key}' is {why}; not checked and not ported",
                                        hint="fix the spelling, or remove it if it is not a setting",
                                        data={"key": key})


@rule("RG602", "config-facts-missing", area="config", severity=Severity.INFO, verdict=Verdict.UNKNOWN)
def facts_missing(ctx):
    """The target's family facts (thinking protocol, sampling, context) are not known: those checks are undecided.

    regraft never guesses a protocol. A local folder whose name matches no known family has facts inferred from its
    chat template and config.json; sampling defaults and parsers stay unknown.
    Bad:  checking sampling for a renamed fine-tune with no generation_config.json
    Good: give the model folder (its chat template and generation_config.json are read)
    """
    tf = ctx.tf
    touches = [k for k in ("temperature", "top_p", "top_k", "min_p", "chat_template_kwargs", "reasoning_parser")
               if ctx.cfg.has(k)]
    if tf.thinking == "unknown" and touches:
        yield facts_missing.rule.finding(
            f"no family facts for {ctx.target.name} (not in regraft's families, no chat template to infer from): "
            f"{', '.join(touches)} not checked",
            hint="pass a local model folder with its tokenizer_config.json / chat_template.jinja")
    elif tf.inferred and tf.sampling is None and any(ctx.cfg.has(k) for k in ("temperature", "top_p", "top_k")):
        yield facts_missing.rule.finding(
            f"{ctx.target.short_name}: protocol inferred from its chat template ({tf.thinking}); recommended sampling "
            "unknown, sampling not checked", severity=Severity.INFO, verdict=None)
