"""The start-up contract: the small model and the master must both accept the hybrid's requests.

Checked before ``serve`` takes traffic (and before ``ask``):

1. identity - which model is behind each endpoint (``/v1/models`` id, or ``--small-model/--master-model``),
   resolved with the core's ``resolve_model`` (local folder, HF cache, catalog; never the Hub);
2. template - each model has a chat template, it renders the hybrid's prompt (system + evidence + user, with
   tools when tools are on) in a sandboxed jinja environment, and it handles ``tools`` when tools are on;
3. context budget - the prompt budget (evidence budget + system + max_tokens, and for the master also the
   draft) fits each model's context window;
4. reasoning protocol - a thinking model's draft has its ``<think>`` block removed before the master sees it
   (a warning when the two protocols differ);
5. live probe - each endpoint answers a 1-token request carrying the same tools (4xx = rejected);
6. adapter probe - when an endpoint's model is an adapter served by name (its /v1/models entry has a ``parent``,
   as vLLM lists ``--lora-modules``), the probe of ``regraft verify --endpoint`` compares it with the parent on a
   few prompts: an adapter that answers exactly like its base (the silent no-op) is an error.

Errors stop start-up with one clear line per problem; warnings are printed and start-up continues. A master
that is unreachable at start-up is a warning when the policy allows degraded mode.

Template rendering, template lookup, tokenizers and the context window are those of ``regraft check --rag`` /
``--config`` (``regraft.rag.template``, ``regraft.rag.tokenizer``, ``regraft.configs.facts.served_context``).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path

from regraft.errors import RegraftError

from .chunking import CharEstimate, count_tokens


from regraft.errors import ContractError  # noqa: E402,F401  (defined in errors.py)


@dataclass
class Finding:
    severity: str  # error | warning | info
    code: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Side:
    """What regraft knows about the model behind one endpoint."""

    role: str
    endpoint: str
    model_id: str | None = None
    spec: object | None = None  # regraft.inspection.model.ModelSpec
    chat_template: str | None = None
    context_window: int | None = None
    tokenizer: object | None = None
    thinking: bool = False
    tools_in_template: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "role": self.role,
            "endpoint": self.endpoint,
            "model": self.model_id,
            "resolved": getattr(self.spec, "origin", None),
            "context_window": self.context_window,
            "chat_template": bool(self.chat_template),
            "tokenizer": getattr(self.tokenizer, "name", None),
            "thinking": self.thinking,
            "tools_in_template": self.tools_in_template,
        }

    def count(self, text: str) -> int:
        return count_tokens(self.tokenizer or CharEstimate(), text)


# -- template and context: the same functions `check --rag` / `check --config` use ---------------------------

def render_chat(template: str, messages: list[dict], tools: list[dict] | None = None, **kwargs) -> str:
    """Render messages with a model's own chat template, generation prompt added: ``regraft.rag.template.render``,
    the sandboxed renderer `check --rag` uses (byte-identical to transformers' apply_chat_template, with its time
    and size limits)."""
    from regraft.rag.template import render

    return render(template, messages, tools=tools or None, **kwargs)


def context_window(spec) -> int | None:
    """The context the runtime will serve: ``regraft.configs.facts.served_context`` (YaRN-aware, as vLLM derives
    max_model_len from config.json)."""
    if spec is None:
        return None
    from regraft.configs.facts import served_context

    return served_context(getattr(spec, "text_config", None) or getattr(spec, "config", None) or {})[0]


def template_of(spec) -> str | None:
    if spec is None:
        return None
    t = getattr(spec, "chat_template", None)
    if isinstance(t, list):  # tokenizer_config may hold a list of named templates
        t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
    if t:
        return t
    tc = getattr(spec, "tokenizer_config", None) or {}
    t = tc.get("chat_template")
    return t if isinstance(t, str) else None


# ----------------------------------------------------------------------------------------------------------

def describe_side(role: str, endpoint: str, model_id: str | None, model_hint: str | None = None) -> Side:
    """Resolve the model behind an endpoint to a ModelSpec (local/cache/catalog only, never the Hub)."""
    side = Side(role=role, endpoint=endpoint, model_id=model_id)
    name = model_hint or model_id
    if not name:
        side.notes.append(f"no model id: the endpoint's /v1/models is empty and no --{role}-model was given")
        return side
    try:
        from regraft.inspection.resolve import resolve_model

        side.spec = resolve_model(name, use_hub=False)
    except Exception as e:  # UnknownModelError, InputError, core not present
        side.notes.append(f"{name!r} could not be resolved ({' '.join(str(e).split())[:160]})")
        return side
    side.chat_template = template_of(side.spec)
    side.context_window = context_window(side.spec)
    # the RAG layer of `check`: own or bundled template, own/bundled exact tokenizer or an estimate
    from regraft.rag.template import template_for
    from regraft.rag.tokenizer import tokenizer_for

    if not side.chat_template:
        src, where = template_for(side.spec)
        if src:
            side.chat_template = src
            side.notes.append(f"chat template: {where}")
    tok = tokenizer_for(side.spec)
    side.tokenizer = tok if getattr(tok, "backend", None) is not None else None
    if side.chat_template:
        side.thinking = "<think>" in side.chat_template
        side.tools_in_template = "tools" in side.chat_template
    return side


PROBE_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant.\n\nEvidence:\n[1] (source: probe.md) regraft probe."},
    {"role": "user", "content": "Reply with OK."},
]


def static_findings(small: Side, master: Side | None, policy, tools: list[dict] | None) -> list[Finding]:
    out: list[Finding] = []
    sides = [small] + ([master] if master else [])
    for s in sides:
        if s.spec is None:
            out.append(Finding("warning", "unknown-model",
                               f"{s.role} {s.endpoint}: cannot verify template/context statically: "
                               + ("; ".join(s.notes) or "model unknown")
                               + f"; pass --{s.role}-model MODEL_DIR to check it"))
            continue
        name = s.model_id
        if not s.chat_template:
            base = "base" in str(getattr(s.spec, "name", "")).lower()
            out.append(Finding("error", "no-chat-template",
                               f"{s.role} model {name} has no chat template"
                               + (" (a Base model: it was not trained for chat)" if base else "")
                               + "; /v1/chat/completions cannot render prompts for it; serve an instruct model "
                               "or add chat_template.jinja to its folder"))
            continue
        try:
            rendered = render_chat(s.chat_template, PROBE_MESSAGES, tools)
        except Exception as e:
            out.append(Finding("error", "template-render",
                               f"{s.role} model {name}: chat template fails on the hybrid prompt "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:160]})"))
            continue
        if "regraft probe" not in rendered:
            out.append(Finding("error", "template-drops-system",
                               f"{s.role} model {name}: chat template drops the system message that carries the "
                               "evidence; put evidence in the user turn or use another template"))
        if tools and not s.tools_in_template:
            out.append(Finding("error", "template-no-tools",
                               f"{s.role} model {name}: chat template ignores `tools`, so tool calls cannot work; "
                               "start with --no-tools or serve a model whose template supports tools"))
        elif tools and tools[0]["function"]["name"] not in rendered:
            out.append(Finding("error", "template-no-tools",
                               f"{s.role} model {name}: chat template did not render the tool definitions"))
        need = policy.evidence_token_budget + s.count(policy.system_prompt) + 64
        if s.role == "small":
            need += policy.small_max_tokens
        else:
            need += policy.small_max_tokens + policy.master_max_tokens  # the draft is part of the master prompt
        if s.context_window is None:
            out.append(Finding("warning", "context-unknown", f"{s.role} model {name}: context window unknown"))
        elif s.context_window < need:
            out.append(Finding("error", "context-budget",
                               f"{s.role} model {name}: context window {s.context_window} tokens < {need} needed "
                               f"(evidence {policy.evidence_token_budget} + system + max_tokens"
                               + (" + draft" if s.role == "master" else "")
                               + "); lower evidence_token_budget/max_tokens in the policy"))
        if s.tokenizer is None:
            out.append(Finding("info", "tokenizer-estimate",
                               f"{s.role} model {name}: no local tokenizer; prompt budgets use a 4 chars/token estimate"))
    if master and small.chat_template and master.chat_template and small.thinking != master.thinking:
        out.append(Finding("warning", "thinking-protocol",
                           f"small model {'uses' if small.thinking else 'does not use'} <think> blocks but the master "
                           f"{'does' if master.thinking else 'does not'}; regraft strips <think>…</think> from the draft "
                           "before escalating"))
    return out


async def probe(backend, tools: list[dict] | None, timeout: float = 60.0) -> Finding | None:
    """One tiny real request with the hybrid's tools; None when accepted."""
    from .backends import BackendError

    try:
        await asyncio.wait_for(
            backend.chat(PROBE_MESSAGES, tools=tools, max_tokens=1, logprobs=True, deadline=timeout), timeout + 1
        )
    except BackendError as e:
        sev = "error"
        code = "probe-rejected" if e.kind == "rejected" else "probe-unreachable"
        return Finding(sev, code, f"{backend.role} {e}")
    except TimeoutError:
        return Finding("error", "probe-unreachable", f"{backend.role} {backend.base_url}: no answer within {timeout:g}s")
    return None


async def adapter_probe(backend, timeout: float = 20.0) -> Finding | None:
    """`regraft verify --endpoint` on the backend's model when it is an adapter served by name; None otherwise."""
    from regraft.verify.endpoint import ProbeClient, averify_endpoint

    from .backends import BackendError

    c = ProbeClient(backend.base_url, role=backend.role, timeout=min(timeout, 10.0), retries=0, api_key=backend.api_key)
    try:
        entries = await c.entries() or []
    except BackendError:
        return None  # the live probe reports an unreachable endpoint
    finally:
        await c.aclose()
    entry = next((e for e in entries if e.get("id") == backend.model), None)
    parent = (entry or {}).get("parent")
    if not parent or parent == backend.model:
        return None
    try:
        rep = await averify_endpoint(backend.base_url, backend.model, base_model=str(parent), n_probes=3, max_tokens=4,
                                     timeout=timeout, retries=0, api_key=backend.api_key, local_reference=False)
    except RegraftError as e:
        return Finding("warning", "adapter-probe", f"{backend.role} adapter {backend.model}: could not be probed ({e})")
    what = f"{backend.role} adapter {backend.model} (parent {parent})"
    if rep.verdict == "no-effect":
        return Finding("error", "adapter-no-effect", f"{what} answers exactly like its base: {rep.reason}; likely "
                       + "; ".join(c["cause"] for c in rep.causes[:3])
                       + f"; run `regraft verify --endpoint {backend.base_url} --model {backend.model}` for details")
    if rep.verdict == "unknown":
        return Finding("warning", "adapter-unknown", f"{what}: whether it is applied is unknown: {rep.reason}")
    return Finding("info", "adapter-applied", f"{what}: {rep.reason}")


@dataclass
class ContractReport:
    small: Side
    master: Side | None
    findings: list[Finding]
    master_down: bool = False

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "small": self.small.summary(),
            "master": self.master.summary() if self.master else None,
            "findings": [f.to_dict() for f in self.findings],
            "master_down": self.master_down,
        }

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ContractError(
                "contract check failed, not starting: " + " | ".join(f.message for f in self.errors)
            )


async def check_contract(small_backend, master_backend, policy, tools: list[dict] | None = None,
                         small_model: str | None = None, master_model: str | None = None,
                         live: bool = True, probe_timeout: float = 60.0) -> ContractReport:
    from .backends import BackendError

    findings: list[Finding] = []
    master_down = False

    async def ident(b, hint):
        if b is None:
            return None, None
        try:
            ids = await b.models()
        except BackendError as e:
            return None, e
        mid = b.model or hint or (ids[0] if ids else None)
        if b.model is None and hint in ids:  # a served name (e.g. an adapter served by name): request it
            b.model = hint
        elif b.model is None and ids:
            b.model = ids[0]
        if hint and ids and b.model not in ids:
            pass
        return mid, None

    (sid, serr), (mid, merr) = await asyncio.gather(ident(small_backend, small_model), ident(master_backend, master_model))
    if serr is not None:
        raise ContractError(f"small model unreachable, not starting: {serr}")
    small = describe_side("small", small_backend.base_url, sid, small_model)
    master = None
    if master_backend is not None:
        if merr is not None:
            master_down = True
            sev = "warning" if policy.degraded_ok else "error"
            findings.append(Finding(sev, "master-down", f"master unreachable ({merr}); "
                                    + ("starting in degraded mode: answers come from the small model, flagged"
                                       if policy.degraded_ok else "degraded_ok is false in the policy")))
        master = describe_side("master", master_backend.base_url, mid, master_model)
    findings += static_findings(small, master, policy, tools)
    if live:
        probes = [probe(small_backend, tools, probe_timeout)]
        if master_backend is not None and not master_down:
            probes.append(probe(master_backend, tools, probe_timeout))
        probes.append(adapter_probe(small_backend, probe_timeout))
        if master_backend is not None and not master_down:
            probes.append(adapter_probe(master_backend, probe_timeout))
        for f in await asyncio.gather(*probes):
            if f is not None:
                findings.append(f)
    return ContractReport(small, master, findings, master_down)


def load_side_from_dir(role: str, model_dir: str | Path) -> Side:
    """Convenience for tests and bench: a Side for a local model folder without an endpoint."""
    return describe_side(role, "", str(model_dir), str(model_dir))
