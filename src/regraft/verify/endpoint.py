"""``regraft verify --endpoint URL --model ADAPTER``: does the server really apply the adapter it says it loaded?

The served adapter and the served base get the same few probe prompts (greedy, ``max_tokens`` small, top-k
log-probabilities: ``/v1/completions`` with ``logprobs: k``, else ``/v1/chat/completions`` with ``top_logprobs``).
Their next-token distributions are compared where both were generated from the same context (`compare`); the
base is asked twice, so the server's own run-to-run noise is measured, not assumed. Verdicts:

- ``no-effect``: the adapter's log-probs equal the base's within the noise floor (exit 1), with the likely causes for
  this runtime (`causes.json`) and what `check --runtime` finds for the adapter;
- ``applied``: they differ clearly; with ``--adapter DIR`` and a local copy of the base (or ``--reference URL``), the
  served adapter is also compared with the reference source+adapter computed locally (top-1 agreement, KL per
  token): ``applied-wrong`` when it is applied but far from the reference (a transposed or swapped layout, a scale
  the runtime ignores) (exit 1);
- ``unknown``: the server returns no log-probabilities (greedy texts are compared instead, weaker evidence), or the
  difference falls between the noise floor and a clear effect (exit 3).

HTTP goes through the hybrid runtime's `Backend` (bounded connect/read timeouts, retries with backoff, one clear
error line). The library returns an `EndpointReport`; the CLI renders it.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from regraft.errors import EndpointError, InputError, RegraftError
from regraft.hybrid.backends import Backend, BackendError

from .compare import PairStats, Pos, compare_generations

TOL = 0.02  # nats: default noise floor for "agrees with the base" (bf16 servers may need more: --tol)
CLEAR = 0.1  # nats: smallest max log-prob difference called a clear effect (and >= 4x the floor)
GENERIC_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "Explain what a LoRA adapter is in one line.",
    "Translate 'good morning' into German.",
    "What is two plus two?",
]


@dataclass
class Probe:
    text: str | None  # raw prompt for /v1/completions (rendered in the chat template when one is known)
    messages: list[dict] | None = None  # for /v1/chat/completions


@dataclass
class Generation:
    text: str
    positions: list[Pos] | None  # None: the server gave no log-probabilities
    finish: str | None = None


@dataclass
class EndpointReport:
    endpoint: str
    model: str
    base: str  # "MODEL @ URL" of the served base
    runtime: str
    api: str  # completions | chat
    verdict: str  # no-effect | applied | applied-wrong | unknown
    reason: str
    probes: int = 0
    max_tokens: int = 0
    top_k: int = 0
    floor: float = TOL
    effect: PairStats | None = None  # served adapter vs served base
    noise: PairStats | None = None  # served base vs served base (same requests again)
    reference: dict | None = None
    causes: list[dict] = field(default_factory=list)
    check_findings: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prompts_from: str = "generic"

    @property
    def exit_code(self) -> int:
        return {"applied": 0, "no-effect": 1, "applied-wrong": 1}.get(self.verdict, 3)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("effect", "noise")}
        d["effect"] = self.effect.to_dict() if self.effect else None
        d["noise"] = self.noise.to_dict() if self.noise else None
        d["exit_code"] = self.exit_code
        return d


# -- wire ----------------------------------------------------------------------------------------------------------

def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def parse_completion_logprobs(lp) -> list[Pos] | None:
    """OpenAI legacy completions ``logprobs`` ({tokens, token_logprobs, top_logprobs}) -> positions."""
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens"), list) or not lp["tokens"]:
        return None
    lps = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    out = []
    for i, t in enumerate(lp["tokens"]):
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        out.append(Pos(str(t), _num(lps[i]) if i < len(lps) else None,
                       {str(k): v for k, v in ((k, _num(v)) for k, v in top.items()) if v is not None}))
    if all(p.logprob is None and not p.top for p in out):
        return None
    return out


def parse_chat_logprobs(lp) -> list[Pos] | None:
    """OpenAI chat ``logprobs`` ({content: [{token, logprob, top_logprobs: [{token, logprob}]}]}) -> positions."""
    if not isinstance(lp, dict) or not isinstance(lp.get("content"), list) or not lp["content"]:
        return None
    out = []
    for t in lp["content"]:
        if not isinstance(t, dict):
            continue
        top = {}
        for a in t.get("top_logprobs") or []:
            if isinstance(a, dict) and _num(a.get("logprob")) is not None:
                top.setdefault(str(a.get("token")), _num(a["logprob"]))
        out.append(Pos(str(t.get("token")), _num(t.get("logprob")), top))
    return out or None


class ProbeClient(Backend):
    """`Backend` (timeouts, retries, one-line errors) plus the two requests a probe needs."""

    async def entries(self) -> list[dict] | None:
        """/v1/models entries (id, owned_by, vLLM's parent for LoRA modules); None when the server has no list."""
        try:
            data, _ = await self._request_json("GET", "/models", deadline=min(self.timeout, 10.0))
        except BackendError as e:
            if e.kind == "rejected":  # 404: a server without /v1/models; the probe itself will tell
                return None
            raise
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            return None
        return [m for m in data["data"] if isinstance(m, dict) and m.get("id")]

    async def complete(self, model: str, prompt: str, max_tokens: int, top_k: int, logprobs: bool = True) -> Generation:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 0}
        if logprobs:
            body["logprobs"] = top_k
        data, _ = await self._request_json("POST", "/completions", body)
        ch = _first_choice(data, self.base_url + "/completions")
        text = ch.get("text")
        return Generation(text if isinstance(text, str) else "", parse_completion_logprobs(ch.get("logprobs")),
                          ch.get("finish_reason"))

    async def chat_complete(self, model: str, messages: list[dict], max_tokens: int, top_k: int,
                            logprobs: bool = True) -> Generation:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "seed": 0}
        if logprobs:
            body.update(logprobs=True, top_logprobs=top_k)
        data, _ = await self._request_json("POST", "/chat/completions", body)
        ch = _first_choice(data, self.base_url + "/chat/completions")
        msg = ch.get("message") if isinstance(ch.get("message"), dict) else {}
        text = msg.get("content")
        return Generation(text if isinstance(text, str) else "", parse_chat_logprobs(ch.get("logprobs")),
                          ch.get("finish_reason"))


def _first_choice(data, url: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"] or \
            not isinstance(data["choices"][0], dict):
        raise BackendError(url, "malformed", "answer has no choices; expected an OpenAI-compatible server")
    return data["choices"][0]


# -- probes --------------------------------------------------------------------------------------------------------

def load_probe_file(path) -> list[str]:
    """seeds.jsonl ({"prompt"|"input"|"text": ...} per line, as `port lora --prompts`) or a text file, one per line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"Cannot read the probes '{path}': no such file. Expected seeds.jsonl "
                         "({\"prompt\": ...} per line) or a text file with one prompt per line.")
    lines = [ln for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"The probes file '{path}' is empty; expected one prompt per line.")
    if lines[0].lstrip().startswith("{"):
        from regraft.port.prompts import load_seeds

        try:
            return [s["prompt"] for s in load_seeds(p)]
        except json.JSONDecodeError as e:
            raise InputError(f"The probes file '{path}' is not JSON lines ({e.msg} at line {e.lineno}); expected "
                             "{\"prompt\": ...} per line.") from None
    return lines


def make_probes(prompts: list[str] | None, template: str | None, n: int) -> tuple[list[Probe], str]:
    """Seeds are sent as they are (they are the prompts the adapter was trained on); generic questions are rendered
    in the target's chat template for /v1/completions (or sent as chat messages when no template is known)."""
    if prompts:
        return [Probe(p, [{"role": "user", "content": p}]) for p in prompts[:n]], "seeds"
    out = []
    for q in (GENERIC_PROMPTS * (1 + n // len(GENERIC_PROMPTS)))[:n]:
        msgs = [{"role": "user", "content": q}]
        text = None
        if template:
            from regraft.rag.template import render

            try:
                text = render(template, msgs, add_generation_prompt=True)
            except RegraftError:
                text = None
        out.append(Probe(text, msgs))
    return out, "generic, chat template" if template and all(p.text for p in out) else "generic, chat API"


def find_template(base_dir, base_name: str | None) -> str | None:
    """The base's chat template: local folder first, then what `check` resolves offline (cache, catalog, bundled)."""
    from regraft.hybrid.contract import template_of
    from regraft.inspection.resolve import resolve_model
    from regraft.rag.template import template_for

    for name in (base_dir, base_name):
        if not name:
            continue
        try:
            spec = resolve_model(str(name), use_hub=False)
        except Exception:  # noqa: BLE001, S112 - unknown to regraft: the chat API renders instead
            continue
        t = template_of(spec) or template_for(spec)[0]
        if t:
            return t
    return None


# -- verdict ---------------------------------------------------------------------------------------------------------

def decide(effect: PairStats, noise: PairStats, tol: float = TOL) -> tuple[str, str, float]:
    """(verdict, reason, floor) from adapter-vs-base and base-vs-base statistics."""
    floor = max(tol, 3 * noise.max_diff if math.isfinite(noise.max_diff) else tol)
    if not effect.positions:
        return "unknown", "no position could be compared", floor
    if effect.max_diff <= floor:
        return ("no-effect", (f"the adapter's log-probs equal the base's on {effect.positions} positions of "
                f"{effect.prompts} probes (max |diff| {effect.max_diff:.2g} nats <= noise floor {floor:.2g})"), floor)
    clear = max(CLEAR, 4 * floor)
    if effect.max_diff >= clear:
        return ("applied", (f"the adapter changes the log-probs (max |diff| {_g(effect.max_diff)} nats vs noise "
                f"floor {floor:.2g}; top-1 agreement with the base {effect.top1_agree:.2f} on {effect.positions} "
                "positions)"), floor)
    return ("unknown", (f"the adapter differs from the base by at most {effect.max_diff:.3g} nats: above the noise "
            f"floor {floor:.2g} but below a clear effect ({clear:.2g}); use --probes with the adapter's own prompts, "
            "more --max-tokens, or --tol"), floor)


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _g(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}"


def text_fallback(a: list[Generation], b: list[Generation]) -> str:
    same = sum(x.text == y.text for x, y in zip(a, b))
    n = min(len(a), len(b))
    if same == n:
        return (f"the server returned no log-probabilities; greedy texts are identical on {n}/{n} probes (weak "
                "evidence that the adapter has no effect: short greedy texts can agree while the distributions differ)")
    return (f"the server returned no log-probabilities; greedy texts differ on {n - same}/{n} probes (weak evidence "
            "that the adapter is applied; how close to the reference cannot be measured without log-probs)")


def likely_causes(runtime: str) -> list[dict]:
    data = json.loads(resources.files("regraft.verify").joinpath("causes.json").read_text())
    return data["runtimes"].get(runtime) or data["runtimes"]["unknown"]


def runtime_of(entries: list[dict] | None, model: str) -> str:
    data = json.loads(resources.files("regraft.verify").joinpath("causes.json").read_text())
    ordered = sorted(entries or [], key=lambda e: e.get("id") != model)  # the adapter's own entry first
    for e in ordered:
        owner = str(e.get("owned_by", "")).lower()
        if owner in data["served_by"]:
            return data["served_by"][owner]
    return "unknown"


def check_findings(adapter_dir, base: str | None, runtime: str) -> list[dict]:
    """What `regraft check BASE BASE --adapter DIR --runtime R` says at warning or above (metadata only)."""
    if not adapter_dir or not base or runtime == "unknown":
        return []
    try:
        from regraft.checks.engine import check
        from regraft.inspection.adapter import read_adapter
        from regraft.inspection.resolve import resolve_model

        spec = resolve_model(base, use_hub=False)
        rep = check(spec, [spec], read_adapter(adapter_dir), runtime)
    except Exception:  # noqa: BLE001 - the causes list stands without it
        return []
    out = []
    for t in rep.targets:
        for area in t.areas.values():
            for f in area.findings:
                if f.severity.rank >= 1:
                    out.append({"code": f.code, "severity": f.severity.value, "message": f.message, "hint": f.hint})
    return out


# -- the probe -------------------------------------------------------------------------------------------------------

@dataclass
class Target:
    client: ProbeClient
    model: str

    @property
    def label(self) -> str:
        return f"{self.model} @ {self.client.base_url}"


async def _generate(t: Target, probes: list[Probe], api: str, max_tokens: int, top_k: int, logprobs: bool = True,
                    parallel: int = 4) -> list[Generation]:
    sem = asyncio.Semaphore(parallel)

    async def one(p: Probe):
        async with sem:
            if api == "completions":
                return await t.client.complete(t.model, p.text, max_tokens, top_k, logprobs)
            return await t.client.chat_complete(t.model, p.messages, max_tokens, top_k, logprobs)

    tasks = [asyncio.ensure_future(one(p)) for p in probes]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:  # the first failure decides: the others are cancelled, not left running
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _known(entries: list[dict] | None, model: str, url: str, what: str) -> dict | None:
    if entries is None:
        return None
    for e in entries:
        if e.get("id") == model:
            return e
    ids = ", ".join(str(e.get("id")) for e in entries[:12]) or "none"
    raise EndpointError(f"{url}: no model named '{model}' is served ({what}); served: {ids}. Pass the name the "
                        "server lists in /v1/models (vLLM: the NAME of --lora-modules NAME=PATH).")


async def averify_endpoint(endpoint: str, model: str, *, base_model: str | None = None,
                           base_endpoint: str | None = None, adapter_dir=None, base_dir=None,
                           reference: str | None = None, reference_model: str | None = None,
                           prompts: list[str] | None = None, n_probes: int = 6, max_tokens: int = 8, top_k: int = 5,
                           tol: float = TOL, timeout: float = 20.0, retries: int = 1, runtime: str | None = None,
                           api: str = "auto", api_key: str | None = None, local_reference: bool = True,
                           progress=None) -> EndpointReport:
    import time

    from regraft.errors import need

    need("httpx", "regraft verify --endpoint", "serve")
    t0 = time.perf_counter()
    say = progress or (lambda m: None)
    if n_probes < 1 or max_tokens < 1 or not 1 <= top_k <= 20:
        raise InputError("verify --endpoint needs --probes >= 1, --max-tokens >= 1 and --top-k between 1 and 20.")
    if adapter_dir is not None and not Path(adapter_dir).expanduser().is_dir():  # noqa: ASYNC240 (once, before any request)
        raise InputError(f"Cannot read adapter '{adapter_dir}': no such folder (expected a PEFT adapter folder).")
    mk = (lambda url, role: ProbeClient(url, None, role=role, timeout=timeout, connect_timeout=min(3.0, timeout),
                                        retries=retries, api_key=api_key))
    ad = mk(endpoint, "adapter")
    bc = mk(base_endpoint, "base") if base_endpoint else ad
    rc = mk(reference, "reference") if reference else None
    clients = {id(c): c for c in (ad, bc, rc) if c is not None}
    try:
        say("listing the served models")
        entries = await ad.entries()
        entry = _known(entries, model, ad.base_url, "--model")
        b_entries = await bc.entries() if bc is not ad else entries
        if base_model is None:
            parent = (entry or {}).get("parent")
            if bc is ad and parent and parent != model:
                base_model = str(parent)
            elif bc is not ad and b_entries:
                base_model = str(b_entries[0]["id"])
        if base_model is None:
            raise InputError("verify --endpoint needs the served base to compare with: --base-model NAME (the base's "
                             "name on the same server) or --base-endpoint URL (a second server without the adapter).")
        if bc is ad and base_model == model:
            raise InputError(f"--base-model '{base_model}' is the adapter's own name; name the served base model.")
        _known(b_entries, base_model, bc.base_url, "--base-model")
        rt = runtime or runtime_of(entries, model)
        template = find_template(base_dir, base_model)
        probes, source = make_probes(prompts, template, n_probes)
        use = api
        if use == "auto":
            use = "completions" if all(p.text for p in probes) else "chat"
        A, B = Target(ad, model), Target(bc, base_model)
        say(f"probing {len(probes)} prompts ({use})")
        lp = True
        try:
            ga = await _generate(A, probes, use, max_tokens, top_k)
        except BackendError as e:
            if api == "auto" and use == "completions" and e.kind == "rejected" and e.status in (404, 405, 501):
                use = "chat"
                ga = await _generate(A, probes, use, max_tokens, top_k)
            elif e.kind == "rejected" and "logprob" in str(e).lower():  # a server that refuses the field
                lp = False
                ga = await _generate(A, probes, use, max_tokens, top_k, logprobs=False)
            else:
                raise
        gb = await _generate(B, probes, use, max_tokens, top_k, logprobs=lp)
        gb2 = await _generate(B, probes, use, max_tokens, top_k, logprobs=lp)
        rep = EndpointReport(ad.base_url, model, B.label, rt, use, "unknown", "", len(probes), max_tokens, top_k,
                             tol, prompts_from=source)
        if any(g.positions is None for g in ga + gb + gb2):
            rep.reason = text_fallback(ga, gb)
            rep.notes.append("no log-probabilities: this server ignores `logprobs` (vLLM, SGLang, llama-server and "
                             "llama-cpp-python return them); the verdict stays unknown")
        else:
            rep.effect = compare_generations(_pos(ga), _pos(gb))
            rep.noise = compare_generations(_pos(gb), _pos(gb2))
            rep.verdict, rep.reason, rep.floor = decide(rep.effect, rep.noise, tol)
        if rc is not None:
            say("probing the reference endpoint")
            r_entries = await rc.entries()
            rm = reference_model or model
            _known(r_entries, rm, rc.base_url, "--reference-model")
            gr = await _generate(Target(rc, rm), probes, use, max_tokens, top_k)
            rep.reference = _reference_from_endpoint(rep, ga, gr, f"{rm} @ {rc.base_url}")
        elif adapter_dir is not None and base_dir is not None and local_reference and rep.effect is not None:
            say("computing the reference locally (transformers + PEFT)")
            from .reference import local_reference as _local

            rep.reference = _local(base_dir, adapter_dir, probes, ga, gb, use, template)
            _apply_local_reference(rep)
        elif adapter_dir is not None and base_dir is None and local_reference:
            rep.notes.append("--adapter without --base-dir: no local reference (pass --base-dir with a local copy of "
                             "the base to measure how close the served adapter is to transformers + PEFT)")
        if rep.verdict == "no-effect":
            rep.causes = likely_causes(rt)
            rep.check_findings = check_findings(adapter_dir, str(base_dir) if base_dir else base_model, rt)
    finally:
        for c in clients.values():
            await c.aclose()
    rep.seconds = time.perf_counter() - t0
    return rep


def _pos(gens: list[Generation]) -> list[list[Pos]]:
    return [g.positions or [] for g in gens]


def _reference_from_endpoint(rep: EndpointReport, ga, gr, label: str) -> dict:
    dev = compare_generations(_pos(ga), _pos(gr))
    eff = rep.effect.max_diff if rep.effect else None
    ref = {"kind": "endpoint", "source": label, "vs_served_adapter": dev.to_dict()}
    if rep.verdict == "applied" and eff is not None and dev.positions:
        close = dev.max_diff <= max(4 * rep.floor, 0.1 * eff)
        ref["close"] = close
        if not close:
            rep.verdict = "applied-wrong"
            rep.reason += (f"; but it is not the reference: max |diff| to {label} {_g(dev.max_diff)} nats "
                           f"(top-1 agreement {dev.top1_agree:.2f}), against an adapter effect of {_g(eff)}")
        else:
            rep.reason += f"; matches the reference {label} (max |diff| {_g(dev.max_diff)} nats)"
    return ref


def _apply_local_reference(rep: EndpointReport) -> None:
    """Judge closeness on the served top-k tokens: the served adapter's log-probs against the reference's, scaled by
    the runtime's own deviation on the base (quantisation, kernels) and by the adapter's effect at the same
    positions (served adapter vs local base)."""
    ref = rep.reference or {}
    adv, basev, eff = ref.get("served_adapter"), ref.get("served_base"), ref.get("served_adapter_vs_local_base")
    if not adv or adv.get("mean_diff") is None or not basev or basev.get("mean_diff") is None or not eff or \
            eff.get("mean_diff") is None:
        rep.notes.append("local reference: no position could be aligned with the served tokens")
        return
    effect = eff["mean_diff"]
    base_ok = basev["mean_diff"] <= max(rep.floor, 0.25 * effect)
    ref["base_comparable"] = base_ok
    if rep.verdict == "no-effect" and (ref.get("local_effect_kl") or 0) <= 1e-6:
        rep.verdict = "unknown"
        rep.reason += "; but the adapter barely changes the output locally either: probe with its own prompts"
        return
    if rep.verdict != "applied":
        return
    if not base_ok:
        rep.notes.append(f"local reference not comparable: the served base differs from the local base (mean |diff| "
                         f"{basev['mean_diff']:.3g} nats vs the adapter's effect {effect:.3g}): another checkpoint, "
                         "quantisation, or tokenisation; closeness to the reference is not judged")
        return
    limit = max(rep.floor, 4 * basev["mean_diff"], 0.1 * effect)
    close = adv["mean_diff"] <= limit
    ref["close"], ref["limit"] = close, round(limit, 6)
    nums = (f"mean |diff| {adv['mean_diff']:.2g} nats on the top-{rep.top_k} tokens of {adv['positions']} positions, "
            f"top-1 agreement {_f(adv['top1_agree'])}, KL {adv['kl']:.2g} per token; served base vs local base "
            f"{basev['mean_diff']:.2g}; adapter effect {effect:.3g}")
    if close:
        rep.reason += f"; matches transformers + PEFT ({nums})"
    else:
        rep.verdict = "applied-wrong"
        rep.reason += (f"; but NOT as transformers + PEFT applies it ({nums}): likely a swapped/transposed layout, a "
                       "wrong scale (rsLoRA, alpha) or experts in the wrong order")


def verify_endpoint(endpoint: str, model: str, **kw) -> EndpointReport:
    """Synchronous `averify_endpoint` (for the CLI and scripts; the hybrid runtime awaits the async one)."""
    return asyncio.run(averify_endpoint(endpoint, model, **kw))
