"""RG4xx: what the chosen runtime (peft, vllm, sglang, llama.cpp, ollama) will do with this adapter.

Facts come from ``catalog/runtimes/<runtime>.json`` (versioned, with sources); each rule names the exact flag or
the exact fix-up (`regraft port lora --runtime R`), and whether that fix-up is exact or lossy.
"""

from __future__ import annotations

from regraft.checks.context import LoraContext
from regraft.checks.finding import Severity, Verdict
from regraft.checks.registry import rule


def _max_rank(ctx: LoraContext) -> int:
    a = ctx.adapter
    return max(((m.rank or 0) for m in a.lora_modules if m.kind != "fused_experts"), default=0) if a else 0


@rule("RG401", "runtime-rank", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def rank(ctx: LoraContext):
    """The adapter's rank is not one the runtime accepts (vLLM: 1, 8, 16, 32, 64, 128, 256, 320, 512; Tinker: at
    most 32 on MoE models, tinker-cookbook#9).

    Bad:  r=24 on vLLM ("LoRA rank 24 is greater than max_lora_rank 16", and 24 is not an allowed value)
    Good: zero-pad the rank to the next allowed value (exact): `regraft port lora --runtime vllm`
    """
    allowed = ctx.runtime_data.get("allowed_ranks") or []
    r = _max_rank(ctx)
    if not r or ctx.adapter is None or not (allowed or ctx.runtime_data.get("rank_caps")):
        return
    ranks = sorted({m.rank for m in ctx.adapter.lora_modules if m.rank and m.kind != "fused_experts"})
    for cap in ctx.runtime_data.get("rank_caps", []):
        if cap.get("when") == "moe" and ctx.target.is_moe and r > cap["max"]:
            yield rank.rule.finding(f"rank {r} > {ctx.runtime}'s cap of {cap['max']} for MoE models: "
                                    + cap["error"].format(rank=r, model=ctx.target.name) + f" ({cap['source']})",
                                    verdict=Verdict.NEEDS_PORT, hint=f"train at r <= {cap['max']}, or truncate the "
                                    f"rank (SVD, lossy: `regraft port lora` reports the loss)")
    bad = [x for x in ranks if x not in allowed] if allowed else []
    if bad:
        nxt = next((x for x in allowed if x >= max(bad)), None)
        if nxt is None:
            yield rank.rule.finding(f"rank {max(bad)} exceeds the largest rank {ctx.runtime} accepts ({allowed[-1]})",
                                    verdict=Verdict.CANNOT, hint="merge the adapter into the weights instead")
        else:
            yield rank.rule.finding(f"ranks {bad} are not among {ctx.runtime}'s allowed ranks {allowed}",
                                    hint=f"pad with zeros to r={nxt} (exact): `regraft port lora --runtime "
                                         f"{ctx.runtime}`, then --max-lora-rank {nxt}")


def _unsupported(ctx: LoraContext, key: str) -> bool:
    return ctx.adapter is not None and ctx.runtime_data.get(key) is False


@rule("RG402", "runtime-dora", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def dora(ctx: LoraContext):
    """The runtime does not support DoRA (vLLM: "vLLM does not yet support DoRA."; llama.cpp: unexpected name).

    Bad:  use_dora: true on vLLM or llama.cpp
    Good: merge DoRA into the weights, or drop the magnitudes (lossy; `regraft port lora` reports how much)
    """
    a = ctx.adapter
    if _unsupported(ctx, "dora") and (a.use_dora or any(m.magnitude is not None for m in a.modules)):
        yield dora.rule.finding(f"{ctx.runtime} rejects DoRA: {ctx.runtime_data.get('dora_error', 'unsupported')}",
                                hint="merge the adapter, or drop the magnitude vectors (lossy, measured by port)")


@rule("RG403", "runtime-modules-to-save", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def modules_to_save(ctx: LoraContext):
    """The runtime rejects full module copies (modules_to_save, e.g. lm_head/embed_tokens) or trainable tokens.

    Bad:  modules_to_save ["lm_head"] on vLLM ("vLLM only supports modules_to_save being None.")
    Good: drop them (lossy: the port reports the norm of what is dropped) or merge the adapter
    """
    a = ctx.adapter
    if a is None:
        return
    full = sorted({m.module for m in a.modules if m.kind == "full_copy"})
    if full and _unsupported(ctx, "modules_to_save"):
        yield modules_to_save.rule.finding(f"{ctx.runtime} rejects full copies of {', '.join(full)}: "
                                           f"{ctx.runtime_data.get('modules_to_save_error', 'unsupported')}",
                                           hint="`regraft port lora --runtime ...` drops them (lossy, reported)")
    if any(m.kind == "trainable_tokens" for m in a.modules) and _unsupported(ctx, "trainable_tokens"):
        yield modules_to_save.rule.finding(f"{ctx.runtime} does not load trainable token rows "
                                           "(token_adapter.trainable_tokens_delta)",
                                           hint="merge the adapter, or drop them (lossy)")
    if any(m.bias is not None for m in a.modules) and ctx.runtime_data.get("lora_bias") is not True:
        how = ctx.runtime_data.get("lora_bias")
        yield modules_to_save.rule.finding(
            f"adapter has lora_B biases; {ctx.runtime}: {how if isinstance(how, str) else 'not supported'}",
            severity=Severity.WARNING if isinstance(how, str) else None,
            verdict=None if isinstance(how, str) else Verdict.NEEDS_RELAYOUT)


@rule("RG404", "runtime-moe", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def moe(ctx: LoraContext):
    """The runtime's support for expert LoRA in this layout (per-expert v4 vs fused v5).

    Bad:  a PEFT 0.21 fused expert adapter given to llama.cpp's converter ("Unprocessed experts")
    Good: `regraft port lora --runtime llama.cpp` writes the per-expert form, then GGUF (exact relayout)
    """
    a = ctx.adapter
    if a is None or a.layout == "standard" or ctx.runtime == "peft":
        return
    support = ctx.runtime_data.get("moe_expert_lora", {})
    key = "fused_v5" if a.layout == "moe-v5-fused" else "per_expert_v4"
    text = support.get(key, "unknown")
    if "not supported" in text or "rejected" in text:
        other = "per_expert_v4" if key == "fused_v5" else "fused_v5"
        other_text = support.get(other, "")
        if "not supported" in other_text or "rejected" in other_text:
            yield moe.rule.finding(f"{ctx.runtime} cannot apply expert LoRA: {text}", verdict=Verdict.CANNOT,
                                   hint="merge the adapter into the weights, or use vLLM/PEFT")
        else:
            yield moe.rule.finding(f"{ctx.runtime}: {text}; the other layout is accepted ({other_text})",
                                   hint=f"`regraft port lora --runtime {ctx.runtime}` relayouts the experts (exact)")
    elif "since" in support and ctx.runtime == "vllm":
        yield moe.rule.finding(f"expert LoRA needs vLLM >= {support['since']}; {text}", severity=Severity.INFO,
                               verdict=None)


@rule("RG405", "runtime-scale", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def runtime_scale(ctx: LoraContext):
    """The runtime computes another scale than PEFT: it ignores rsLoRA or rank/alpha patterns, or has one alpha.

    llama.cpp writes one `adapter.lora.alpha` and applies alpha/rank from tensor shapes; vLLM does not read
    rank_pattern/alpha_pattern and ignores rsLoRA on MoE experts (vllm#55545).
    Bad:  use_rslora r=64 alpha=64 (scale 8) served by llama.cpp at scale 1
    Good: fold each module's scale into lora_B (exact): `regraft port lora --runtime llama.cpp`
    """
    a, rd = ctx.adapter, ctx.runtime_data
    if a is None or not a.lora_modules:
        return
    problems = []
    if a.use_rslora and rd.get("rslora") is False:
        problems.append("rsLoRA (alpha/sqrt(r)) is not applied")
    if a.use_rslora and rd.get("rslora_moe_experts") is False and a.layout != "standard":
        problems.append("rsLoRA is ignored on expert LoRA (vllm#55545)")
    if (a.rank_pattern or a.alpha_pattern) and rd.get("rank_alpha_patterns") is False:
        scales = {round(a.scale(m.module), 6) for m in a.lora_modules}
        if len(scales) > 1 or a.alpha_pattern:
            problems.append("rank_pattern/alpha_pattern are not read (one global scale)")
    if problems:
        yield runtime_scale.rule.finding(f"{ctx.runtime}: " + "; ".join(problems),
                                         hint=f"fold the scales into lora_B (exact): `regraft port lora --runtime {ctx.runtime}`")


@rule("RG406", "runtime-architecture", area="lora", severity=Severity.ERROR, verdict=Verdict.CANNOT)
def architecture(ctx: LoraContext):
    """The runtime does not support LoRA on this architecture at all.

    Bad:  a Qwen3 safetensors ADAPTER in an Ollama Modelfile (safetensors adapters: Llama, Mistral, Gemma only)
    Good: convert to GGUF first, or pick a runtime that supports the architecture
    """
    archs = ctx.runtime_data.get("architectures")
    mt = ctx.target.model_type
    if isinstance(archs, list) and mt and mt not in archs:
        yield architecture.rule.finding(f"{ctx.runtime} has no LoRA support recorded for model_type {mt!r} "
                                        f"(supported: {', '.join(archs)})", hint="use PEFT (merge) or vLLM")
    st = ctx.runtime_data.get("safetensors_adapter_architectures")
    if st and mt and mt not in st:
        yield architecture.rule.finding(f"{ctx.runtime} takes safetensors adapters only for {', '.join(st)}; "
                                        f"{mt} adapters must be converted to GGUF first", severity=Severity.WARNING,
                                        verdict=Verdict.NEEDS_RELAYOUT,
                                        hint="`regraft port lora --runtime llama.cpp --out lora.gguf`")
    for caveat in ctx.runtime_data.get("caveats", []):
        yield architecture.rule.finding(caveat, severity=Severity.INFO, verdict=None)


@rule("RG407", "runtime-flags", area="lora", severity=Severity.INFO)
def flags(ctx: LoraContext):
    """The command line that serves this adapter on the target with the chosen runtime.

    Bad:  vllm serve ... --enable-lora (default --max-lora-rank 16) with an r=64 adapter
    Good: the printed flags
    """
    tmpl = ctx.runtime_data.get("flags")
    if not tmpl or ctx.adapter is None:
        return
    r = _max_rank(ctx) or ctx.adapter.r
    allowed = ctx.runtime_data.get("allowed_ranks")
    if allowed:
        r = next((x for x in allowed if x >= r), r)
    text = tmpl.format(model=ctx.target.name, rank=r, name="adapter", adapter=str(ctx.adapter.path))
    from regraft.verify.recipes import verify_command

    verify = verify_command(ctx.runtime, ctx.target.name, str(ctx.adapter.path))
    yield flags.rule.finding(f"{ctx.runtime}: {text}", hint=f"then prove it is applied: {verify}" if verify else "",
                             data={"command": text, **({"verify": verify} if verify else {})})


# --- the serving side: `check --config` with a vllm / sglang / llama-server command line or an Ollama Modelfile ---


def serving(ctx: LoraContext):
    """The LoRA flags of the serving file given with --config (read once per check), or None."""
    if "_serving" not in ctx.__dict__:
        from regraft.configs.serve_cmdline import read_lora_serving

        ctx.__dict__["_serving"] = read_lora_serving(ctx.serving_config) if ctx.serving_config else None
    return ctx.__dict__["_serving"]


def _serving_data(sv) -> dict:
    from regraft.catalog import runtime_data

    return runtime_data(sv.runtime) or {}


def _version_note(sv, entries: list[dict]) -> str:
    """The versioned behaviour that applies to the serving file's runtime version (or the range, when unknown)."""
    from regraft.configs.serve_cmdline import version_tuple

    v = version_tuple(sv.version)
    for e in entries:
        until, after = version_tuple(e.get("until")), version_tuple(e.get("after"))
        if v is not None and ((until and v <= until) or (after and v > after)):
            return f"{sv.runtime} {sv.version}: {e['behaviour']} ({e['source']})"
    first = entries[0]
    return (f"{sv.runtime} version not stated in the file; up to {first['until']}: {first['behaviour']} "
            f"({first['source']})") if first.get("until") else f"{first['behaviour']} ({first['source']})"


@rule("RG408", "serve-target-modules", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def serve_target_modules(ctx: LoraContext):
    """--lora-target-modules leaves out the adapter's modules: those deltas are never applied.

    vLLM (PR 34984) and SGLang restrict LoRA to the listed module suffixes. An adapter whose modules are all outside
    the list loads, answers 200 and changes nothing: on vLLM 0.28.0 the output is byte-identical to the base model's
    (vllm#55193). vLLM names packed modules: q/k/v_proj -> qkv_proj, gate/up_proj -> gate_up_proj.
    Bad:  a down_proj-only adapter served with --lora-target-modules qkv_proj
    Good: --lora-target-modules covering every module the adapter has (or drop the flag)
    """
    sv, a = serving(ctx), ctx.adapter
    if sv is None or sv.target_modules is None or a is None or not a.lora_modules:
        return
    ls = _serving_data(sv).get("lora_serving", {})
    packed = ls.get("packed_modules", {})
    allowed = {m.rsplit(".", 1)[-1] for m in sv.target_modules}
    leaves = sorted({"experts" if m.kind == "fused_experts" else m.leaf for m in a.lora_modules})
    dropped = [x for x in leaves if not ("all" in allowed or x in allowed or packed.get(x) in allowed)]
    if not dropped:
        return
    flag = f"{sv.where('target_modules')} {' '.join(sv.target_modules)}"
    want = sorted({packed.get(x, x) for x in leaves}) if sv.runtime == "vllm" else leaves
    if len(dropped) == len(leaves):
        note = _version_note(sv, ls["disjoint_target_modules"]) if ls.get("disjoint_target_modules") else ""
        yield serve_target_modules.rule.finding(
            f"{flag} is disjoint from the adapter's modules ({', '.join(leaves)}): the adapter loads and changes "
            f"nothing" + (f"; {note}" if note else ""), hint=f"serve with {sv.where('target_modules')} "
            f"{' '.join(want)} (or without the flag)", data={"dropped": dropped, "version": sv.version})
    else:
        yield serve_target_modules.rule.finding(
            f"{flag} leaves out {', '.join(dropped)} of the adapter's modules ({', '.join(leaves)}): those deltas are "
            "not applied and no runtime says so", severity=Severity.WARNING,
            hint=f"add {' '.join(sorted({packed.get(x, x) if sv.runtime == 'vllm' else x for x in dropped}))}",
            data={"dropped": dropped, "version": sv.version})


@rule("RG409", "serve-max-loras", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def serve_max_loras(ctx: LoraContext):
    """--max-loras / --max-cpu-loras against the adapters the command serves.

    vLLM runs at most max_loras distinct adapters in one batch (default 1): more adapters than that are not an
    error, their requests wait for a slot. max_cpu_loras below max_loras is refused at start-up
    (vllm/config/lora.py: "max_cpu_loras ... must be >= max_loras").
    Bad:  --lora-modules a=... b=... c=... with the default --max-loras 1 and three adapters used at once
    Good: --max-loras 3 (memory grows with max_loras x max_lora_rank)
    """
    sv = serving(ctx)
    if sv is None or sv.runtime not in ("vllm", "sglang") or not sv.lora_requested:
        return
    ls = _serving_data(sv).get("lora_serving", {})
    mx = sv.max_loras if sv.max_loras is not None else ls.get("default_max_loras")
    if sv.runtime == "vllm" and sv.max_cpu_loras is not None and mx is not None and sv.max_cpu_loras < mx:
        yield serve_max_loras.rule.finding(f"{sv.where('max_cpu_loras')} {sv.max_cpu_loras} < max_loras {mx}: vLLM "
                                           "refuses to start (max_cpu_loras must be >= max_loras)",
                                           hint=f"set {sv.where('max_cpu_loras')} >= {mx}")
    n = len(sv.adapters)
    if mx is not None and n > mx:
        yield serve_max_loras.rule.finding(
            f"{n} adapters are served, {sv.where('max_loras') if sv.max_loras is not None else 'max-loras'} is {mx}"
            + ("" if sv.max_loras is not None else " (default)") + f": {ls.get('max_loras_behaviour', 'the others wait')}",
            severity=Severity.INFO, verdict=None, hint=f"--max-loras {n} if they are used together")


@rule("RG410", "serve-extra-vocab", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def serve_extra_vocab(ctx: LoraContext):
    """LoRA extra vocabulary on a runtime that removed it: the flag is refused and added tokens cannot load.

    vLLM removed --lora-extra-vocab-size and every adapter's own added tokens in 2025-11 (PR 28382, PR 28545;
    vllm#29786): all LoRAs share the base vocabulary.
    Bad:  vllm serve ... --enable-lora --lora-extra-vocab-size 256 with an adapter that added tokens
    Good: keep the base vocabulary (trainable_token_indices on existing ids), or merge the adapter
    """
    sv, a = serving(ctx), ctx.adapter
    runtime = sv.runtime if sv is not None else ctx.runtime
    if runtime != "vllm":
        return
    from regraft.catalog import runtime_data

    ev = (runtime_data("vllm") or {}).get("lora_serving", {}).get("extra_vocab")
    if not ev:
        return
    if sv is not None and sv.extra_vocab_size is not None:
        yield serve_extra_vocab.rule.finding(f"{sv.where('extra_vocab_size')} {sv.extra_vocab_size}: {ev['behaviour']} "
                                             f"({ev['source']})", hint=f"remove {sv.where('extra_vocab_size')}")
    vocab = ctx.target.get("vocab_size")
    grown = [m.module for m in (a.modules if a else []) if vocab and (
        (m.kind == "lora_embedding" and m.a is not None and m.a.shape[-1] > vocab)
        or (m.kind == "full_copy" and m.full is not None and len(m.full.shape) == 2 and m.full.shape[0] > vocab))]
    if grown:
        yield serve_extra_vocab.rule.finding(f"the adapter adds tokens beyond the target's {vocab} ({', '.join(grown)}): "
                                             f"vLLM LoRA has no extra vocabulary since {ev['removed']} ({ev['source']})",
                                             verdict=Verdict.CANNOT, hint="merge the adapter (and its tokenizer) into "
                                             "the model, then serve the merged model")


@rule("RG411", "serve-ollama-adapter", area="lora", severity=Severity.ERROR, verdict=Verdict.NEEDS_RELAYOUT)
def serve_ollama_adapter(ctx: LoraContext):
    """An Ollama Modelfile with ADAPTER: `ollama create` refuses it from Ollama 0.34.1.

    ollama PR 14969 removed creating models from a LoRA adapter; the CLI rejects any Modelfile with ADAPTER before
    the request reaches the server (generative-computing/mellea#1651). Models built earlier still serve.
    Bad:  FROM qwen3:8b / ADAPTER ./lora.gguf with Ollama 0.34.1
    Good: merge the adapter and import the merged GGUF (FROM ./merged.gguf), or serve with llama-server --lora
    """
    sv = serving(ctx)
    uses = (sv is not None and sv.runtime == "ollama" and sv.adapters) or (sv is None and ctx.runtime == "ollama"
                                                                          and ctx.adapter is not None)
    if not uses:
        return
    from regraft.catalog import runtime_data
    from regraft.configs.serve_cmdline import version_tuple

    ma = (runtime_data("ollama") or {}).get("modelfile_adapter")
    if not ma:
        return
    v = version_tuple(sv.version) if sv is not None else None
    cut = version_tuple(ma["removed_in"])
    hint = "merge the adapter into the model and import the merged GGUF, or serve it with llama-server --lora"
    if v is not None and v < cut:
        yield serve_ollama_adapter.rule.finding(f"Ollama {sv.version} still builds models from ADAPTER; "
                                                f"{ma['removed_in']} and later refuse it ({ma['source']})",
                                                severity=Severity.INFO, verdict=None, hint=hint)
    elif v is not None:
        yield serve_ollama_adapter.rule.finding(f"Ollama {sv.version}: {ma['behaviour']} ({ma['source']})", hint=hint)
    else:
        yield serve_ollama_adapter.rule.finding(f"from Ollama {ma['removed_in']}: {ma['behaviour']} ({ma['source']}); "
                                                "the version is not stated", severity=Severity.WARNING, verdict=None,
                                                hint=hint + "; or state the version (e.g. '# ollama 0.33.0')")
