"""RG1xx: does every adapter tensor fit a module of the target, with the right shape?"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule
from regraft.checks.rules._group import grouped, layers_text, tensor_count


@rule("RG101", "lora-shape-mismatch", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def shape_mismatch(ctx: LoraContext):
    """A LoRA tensor's shape differs from what the target module needs; PEFT stops with `size mismatch`.

    LoRA A is [r, in] and B is [out, r]: in/out are the module's widths (hidden size, q/kv widths, FFN size).
    Bad:  q_proj lora_A [16, 2048] (hidden 2048) on a model with hidden 5120
    Good: same widths, or `regraft port lora --method project|distill` to move it across shapes
    """
    for tmpl, why, ms in grouped([m for m in ctx.by_status("mismatch") if not _other_orientation(m, ctx)]):
        yield shape_mismatch.rule.finding(
            f"{tmpl} ({layers_text(ms)}): {why}", module=tmpl, layer=ms[0].am.layer,
            hint="shapes differ: move it with `regraft port lora --method auto` (projection + distillation)",
            data={"tensors": tensor_count(ms)})


def _other_orientation(m, ctx: LoraContext) -> bool:
    """A fused-experts module whose shapes are the PEFT 0.18 (positional) orientation: RG306 reports it as a
    relayout, not as a port across shapes."""
    if m.am.kind != "fused_experts" or m.target is None or not m.target.shape:
        return False
    from regraft.port.relayout import old_orientation

    return old_orientation(m.am, m.target.shape, ctx.target.arch.num_experts or 0,
                           (ctx.adapter.config.get("peft_version") if ctx.adapter else None))


@rule("RG102", "lora-module-missing", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def module_missing(ctx: LoraContext):
    """An adapter module has no counterpart in the target; PEFT ignores such keys without a word.

    Bad:  an adapter on `linear_attn.in_proj_qkvz` (Qwen3-Next) loaded on Qwen3-32B, which has no linear attention
    Good: target modules that exist in the target, or a port that maps them
    """
    for tmpl, why, ms in grouped(ctx.by_status("missing")):
        yield module_missing.rule.finding(
            f"{tmpl} ({layers_text(ms)}): {why}; {tensor_count(ms)} tensors would be silently ignored",
            module=tmpl, hint="the target has no such module: drop it or port the adapter",
            data={"tensors": tensor_count(ms)})


@rule("RG103", "lora-extra-layers", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def extra_layers(ctx: LoraContext):
    """The adapter has layers the target does not have; PEFT drops them silently (no warning at all).

    Bad:  a 64-layer Qwen3-32B adapter on 48-layer Qwen3-30B-A3B: layers 48-63 vanish without a message
    Good: the same depth, or a port with an explicit layer map
    """
    ms = ctx.by_status("extra-layer")
    if ms:
        yield extra_layers.rule.finding(
            f"{len(ms)} adapter modules in {layers_text(ms)} are beyond the target's "
            f"{ctx.target.arch.num_layers} layers; PEFT drops their {tensor_count(ms)} tensors silently",
            hint="depths differ: port with a layer map (`regraft port lora --method auto`)",
            data={"tensors": tensor_count(ms)})


@rule("RG104", "lora-uncovered-layers", area="lora", severity=Severity.WARNING, verdict=None)
def uncovered(ctx: LoraContext):
    """The target has layers the adapter does not cover; PEFT injects zero LoRA there (warning: missing keys).

    Bad:  a 48-layer adapter on a 64-layer model: 16 layers get no update and the behaviour shifts
    Good: an adapter with one tensor pair per targeted module per layer
    """
    from regraft.inspection.adapter import _ranges

    by_layers: dict[tuple, list[str]] = {}
    for tmpl, layers in ctx.uncovered.items():
        by_layers.setdefault(tuple(layers), []).append(tmpl)
    for layers, tmpls in by_layers.items():
        yield uncovered.rule.finding(
            f"{', '.join(tmpls)}: target layers {_ranges(list(layers))} have the module but no adapter tensors "
            f"({len(layers)} of {ctx.target.arch.num_layers})", module=tmpls[0],
            hint="those layers stay at the base weights: port with a layer map if the depths differ")


@rule("RG105", "dense-lora-on-moe", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def dense_on_moe(ctx: LoraContext):
    """A dense-MLP LoRA (mlp.gate_proj/up_proj/down_proj) on an MoE target: PEFT silently drops the MLP part.

    Bad:  a Qwen3-32B LoRA with MLP targets on Qwen3-30B-A3B (experts, no dense MLP)
    Good: attention-only transfer (flagged), then distil the MLP behaviour into the experts or attention
    """
    for tmpl, why, ms in grouped(ctx.by_status("dense-on-moe")):
        yield dense_on_moe.rule.finding(
            f"{tmpl} ({layers_text(ms)}): {why}; {tensor_count(ms)} tensors would be dropped without a warning",
            module=tmpl, hint="only the attention part can move as weights; distil the rest")


@rule("RG106", "moe-lora-on-dense", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def moe_on_dense(ctx: LoraContext):
    """An expert LoRA on a dense target: there are no experts to put it on.

    Bad:  a Qwen3-30B-A3B expert LoRA on Qwen3-32B
    Good: `regraft port lora --method distill` (the MoE teacher trains a dense student LoRA)
    """
    for tmpl, why, ms in grouped(ctx.by_status("experts-on-dense")):
        yield moe_on_dense.rule.finding(f"{tmpl} ({layers_text(ms)}): {why}", module=tmpl,
                                        hint="distil the expert behaviour into the dense target",
                                        data={"tensors": tensor_count(ms)})


@rule("RG107", "expert-count-mismatch", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def expert_count(ctx: LoraContext):
    """The adapter was trained for another number of experts (fused A/B have E*r rows; per-expert keys run past E).

    Bad:  a 128-expert adapter on a 512-expert Qwen3-Next
    Good: the same expert count
    """
    for tmpl, why, ms in grouped(ctx.by_status("expert-count")):
        yield expert_count.rule.finding(f"{tmpl} ({layers_text(ms)}): {why}", module=tmpl,
                                        hint="expert counts differ: only distillation can move expert behaviour")


@rule("RG108", "target-shape-unknown", area="lora", severity=Severity.WARNING, verdict=Verdict.UNKNOWN)
def shape_unknown(ctx: LoraContext):
    """The target's shapes cannot be derived: its catalog entry is partial or its architecture is unsupported.

    regraft never guesses a missing config value; the verdict is "unknown" until a full config.json is given.
    Bad:  Qwen/Qwen3-30B-A3B-Instruct-2507 (partial: hidden_size not evidenced)
    Good: a local model folder or HF-cache snapshot with config.json
    """
    t = ctx.target
    if t.arch is None:
        why = (f"its catalog entry is partial (unknown: {', '.join(t.unknown_fields)})" if t.partial
               else f"model_type {t.model_type!r} has no architecture file")
        if t.partial and ctx.source is not None:
            known = {k: v for k, v in t.config.items() if v is not None and not isinstance(v, (dict, list))}
            src = ctx.source.text_config
            same = sorted(k for k, v in known.items() if src.get(k) == v)
            differ = sorted(f"{k} {src.get(k)} vs {v}" for k, v in known.items() if k in src and src.get(k) != v)
            if same:
                why += f"; the known fields agree with {ctx.source.name}: {', '.join(same)}"
            if differ:
                why += f"; they differ from {ctx.source.name}: {', '.join(differ)}"
        yield shape_unknown.rule.finding(
            f"cannot derive module shapes of {t.name}: {why}",
            hint="pass a local folder or HF-cache snapshot with the real config.json (or `regraft catalog list`)",
            data={"unknown_fields": t.unknown_fields})
        return
    for tmpl, why, ms in grouped(ctx.by_status("unknown")):
        yield shape_unknown.rule.finding(f"{tmpl} ({layers_text(ms)}): {why}", module=tmpl,
                                         hint="give the full config.json of the target")


@rule("RG109", "adapter-malformed", area="lora", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def malformed(ctx: LoraContext):
    """The adapter itself is inconsistent: a lora_A without its lora_B, or A and B of different ranks.

    Bad:  lora_A [8, 2048] with lora_B [4096, 16]
    Good: re-save the adapter with PEFT
    """
    for tmpl, why, ms in grouped(ctx.by_status("malformed")):
        yield malformed.rule.finding(f"{tmpl} ({layers_text(ms)}): {why}", module=tmpl,
                                     hint="the adapter file is damaged or hand-edited: re-save it with PEFT")


@rule("RG110", "vocab-size-mismatch", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_PORT)
def vocab_mismatch(ctx: LoraContext):
    """Embedding LoRA, trainable tokens or a saved lm_head/embed_tokens copy does not match the target vocabulary.

    Qwen2.5 pads its vocabulary to 151936 (<= 7B) or 152064 (>= 14B); Qwen3 uses 151936; Llama 3 128256.
    Bad:  modules_to_save lm_head [152064, 5120] on a 151936-row target
    Good: same vocabulary size and tokenizer, or drop the module and distil
    """
    for m in ctx.by_status("mismatch"):
        if m.am.kind in ("lora_embedding", "full_copy", "trainable_tokens") and m.target is not None \
                and m.target.role in ("embed", "lm_head"):
            yield vocab_mismatch.rule.finding(f"{m.am.module}: {m.why}", module=m.am.module,
                                              hint="vocabulary sizes differ: these rows cannot be copied")


@rule("RG111", "lm-head-on-tied-target", area="lora", severity=Severity.WARNING, verdict=Verdict.NEEDS_RELAYOUT)
def tied_lm_head(ctx: LoraContext):
    """The adapter carries lm_head but the target ties lm_head to the embeddings (llama.cpp ignores it).

    Bad:  modules_to_save ["lm_head"] on Qwen3-4B (tie_word_embeddings: true)
    Good: untied targets, or merge the adapter
    """
    for m in ctx.matches:
        if m.target is not None and m.target.role == "lm_head" and m.target.tied_to:
            yield tied_lm_head.rule.finding(
                f"{m.am.module}: the target ties lm_head to {m.target.tied_to}; an lm_head update either changes "
                "the embeddings too (merged) or is ignored (llama.cpp)", module=m.am.module,
                hint="merge into an untied copy, or drop lm_head")


@rule("RG112", "layers-to-transform-indexed", area="lora", severity=Severity.WARNING, verdict=None)
def layers_indexed(ctx: LoraContext):
    """layers_to_transform names layer indices: they mean other layers on a model of another depth.

    Bad:  layers_to_transform [40..47] (the last 8 of 48) on a 64-layer target, where they are middle layers
    Good: same depth, or re-derive the indices for the target
    """
    a, arch, src = ctx.adapter, ctx.target.arch, ctx.source
    if not a or not a.layers_to_transform or not arch or not src or not src.arch:
        return
    if src.arch.num_layers != arch.num_layers:
        yield layers_indexed.rule.finding(
            f"layers_to_transform {a.layers_to_transform} was chosen for {src.arch.num_layers} layers; the target "
            f"has {arch.num_layers}", hint="re-map the indices proportionally before porting")
