"""The OpenAI chat-completions request contract: every parameter an OpenAI client may send is parsed here, type-
and range-checked as OpenAI does, and either kept (to be honoured: passed to the backend that answers) or refused
with the parameter named. Pure: no I/O, no policy.

``parse_chat_request(body) -> ChatRequest`` raises ``RequestError`` (message, param, code), which the server turns
into HTTP 400 with the standard ``{"error": {"message", "type", "param", "code"}}`` object.

What happens to each parameter (also in docs/hybrid.md, "The OpenAI contract"):

- passed to the backend that answers: ``max_tokens`` / ``max_completion_tokens`` (bounded by the policy's
  ``small_max_tokens`` / ``master_max_tokens``; the response's ``regraft.bounded`` says so), ``n``, ``stop``,
  ``temperature``, ``top_p``, ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logprobs`` /
  ``top_logprobs``, ``response_format`` (also checked on the draft: an answer that is not the JSON asked for is
  escalated), ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` (the client's tools: tool calls go back to the
  client), ``user``, ``safety_identifier``, ``prompt_cache_key``, ``reasoning_effort``, and the open-model sampling
  extras ``top_k``, ``min_p``, ``repetition_penalty``, ``chat_template_kwargs``;
- ``logit_bias``: token ids belong to one tokenizer, so only with ``model`` ``small`` or ``master`` (one model answers);
- ``stream`` / ``stream_options.include_usage``: SSE, with a final usage chunk;
- ``metadata``: checked (16 pairs, keys <= 64, values <= 512 chars) and echoed in ``regraft.metadata``;
- ``store``: ``false`` only (regraft stores no completions); ``service_tier``: ``auto`` / ``default`` only;
- refused (400 naming it): ``audio``, ``modalities`` other than ``["text"]``, ``functions`` / ``function_call``
  (deprecated: use ``tools``), ``prediction``, ``web_search_options``, ``verbosity``,
  ``stream_options.include_obfuscation: true``, content parts other than text, and any unknown parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROUTES = {"regraft": "auto", "auto": "auto", "regraft-auto": "auto", "small": "small", "regraft-small": "small",
          "master": "master", "regraft-master": "master"}
MODEL_IDS = ("regraft", "small", "master")
ROLES = ("system", "developer", "user", "assistant", "tool")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# parameters passed to the backend unchanged (after validation)
PASSTHROUGH = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "user", "safety_identifier",
               "prompt_cache_key", "reasoning_effort", "top_k", "min_p", "repetition_penalty", "chat_template_kwargs",
               "logit_bias")
REFUSED = {
    "audio": "regraft serves text models: audio output is not supported",
    "functions": "'functions' is deprecated and not supported; use 'tools'",
    "function_call": "'function_call' is deprecated and not supported; use 'tool_choice' with 'tools'",
    "prediction": "predicted outputs ('prediction') are not supported by the hybrid endpoint",
    "web_search_options": "web search is not supported; register a tool with `regraft serve --tools`",
    "verbosity": "'verbosity' has no equivalent on open-model backends; ask for brevity in the messages",
}


from regraft.errors import RequestError  # noqa: E402,F401  (defined in errors.py)


@dataclass
class ChatRequest:
    model: str
    route: str  # auto | small | master
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None  # the client's limit (max_completion_tokens or max_tokens)
    max_tokens_param: str | None = None  # which of the two the client used
    n: int = 1
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    params: dict = field(default_factory=dict)  # PASSTHROUGH parameters that were set
    metadata: dict | None = None
    trace: bool | None = None  # regraft extension: {"regraft": {"trace": true}}

    @property
    def json_mode(self) -> str | None:
        rf = self.response_format or {}
        return rf.get("type") if rf.get("type") in ("json_object", "json_schema") else None

    @property
    def json_schema(self) -> dict | None:
        rf = self.response_format or {}
        return (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None

    def backend_params(self) -> dict:
        """What the answering backend receives besides messages, tools and max_tokens."""
        out = dict(self.params)
        if self.n != 1:
            out["n"] = self.n
        if self.stop:
            out["stop"] = list(self.stop)
        if self.response_format is not None:
            out["response_format"] = self.response_format
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out


# -- the OpenAI-style checks -----------------------------------------------------------------------------

def _tname(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _bad_type(param: str, expected: str, v) -> RequestError:
    return RequestError(f"Invalid type for '{param}': expected {expected}, but got {_tname(v)} instead.", param,
                        "invalid_type")


def _bool(body: dict, k: str) -> bool | None:
    v = body.get(k)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise _bad_type(k, "a boolean", v)
    return v


def _int(body: dict, k: str, lo: int | None = None, hi: int | None = None) -> int | None:
    v = body.get(k)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad_type(k, "an integer", v)
    if lo is not None and v < lo:
        raise RequestError(f"Invalid '{k}': integer below minimum value. Expected a value >= {lo}, but got {v} "
                           "instead.", k, "integer_below_min_value")
    if hi is not None and v > hi:
        raise RequestError(f"Invalid '{k}': integer above maximum value. Expected a value <= {hi}, but got {v} "
                           "instead.", k, "integer_above_max_value")
    return v


def _num(body: dict, k: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    v = body.get(k)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise _bad_type(k, "a number", v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise RequestError(f"Invalid '{k}': decimal below minimum value. Expected a value {'>' if lo_open else '>='} "
                           f"{lo:g}, but got {v:g} instead.", k, "decimal_below_min_value")
    if hi is not None and v > hi:
        raise RequestError(f"Invalid '{k}': decimal above maximum value. Expected a value <= {hi:g}, but got {v:g} "
                           "instead.", k, "decimal_above_max_value")
    return v


def _str(body: dict, k: str, max_len: int | None = None) -> str | None:
    v = body.get(k)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _bad_type(k, "a string", v)
    if max_len is not None and len(v) > max_len:
        raise RequestError(f"Invalid '{k}': string too long. Expected a string with maximum length {max_len}, but got "
                           f"a string with length {len(v)} instead.", k, "string_above_max_length")
    return v


def _enum(body: dict, k: str, values: tuple[str, ...]) -> str | None:
    v = _str(body, k)
    if v is not None and v not in values:
        raise RequestError(f"Invalid value for '{k}': {v!r}. Supported values are: "
                           + ", ".join(repr(x) for x in values) + ".", k, "invalid_value")
    return v


def find_lone_surrogate(v, path: str = "") -> str | None:
    """The path of the first string (or key) holding a lone UTF-16 surrogate, which no UTF-8 backend can take."""
    if isinstance(v, str):
        return path if any("\ud800" <= ch <= "\udfff" for ch in v) else None
    if isinstance(v, dict):
        for k, x in v.items():
            p = f"{path}.{k}" if path else str(k)
            if find_lone_surrogate(k, p) is not None:
                return p
            r = find_lone_surrogate(x, p)
            if r is not None:
                return r
    elif isinstance(v, list):
        for i, x in enumerate(v):
            r = find_lone_surrogate(x, f"{path}[{i}]")
            if r is not None:
                return r
    return None


# -- the parts ----------------------------------------------------------------------------------------------

def _content(c, where: str, role: str):
    if c is None:
        return
    if isinstance(c, str):
        return
    if not isinstance(c, list):
        raise _bad_type(f"{where}.content", "a string or an array of content parts", c)
    for j, part in enumerate(c):
        p = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise _bad_type(p, "an object", part)
        t = part.get("type")
        if t == "text":
            if not isinstance(part.get("text"), str):
                raise _bad_type(f"{p}.text", "a string", part.get("text"))
        elif t == "refusal" and role == "assistant":
            if not isinstance(part.get("refusal"), str):
                raise _bad_type(f"{p}.refusal", "a string", part.get("refusal"))
        elif t in ("image_url", "input_audio", "file"):
            raise RequestError(f"Invalid content part type {t!r} in '{p}': regraft serves text models; send text "
                               "parts only.", f"{p}.type", "unsupported_content")
        else:
            raise RequestError(f"Invalid value for '{p}.type': {t!r}. Supported values are: 'text'.", f"{p}.type",
                               "invalid_value")


def _messages(msgs) -> list[dict]:
    if msgs is None:
        raise RequestError("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(msgs, list):
        raise _bad_type("messages", "an array", msgs)
    if not msgs:
        raise RequestError("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                           "empty array instead.", "messages", "empty_array")
    for i, m in enumerate(msgs):
        w = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad_type(w, "an object", m)
        role = m.get("role")
        if role is None:
            raise RequestError(f"Missing required parameter: '{w}.role'.", f"{w}.role", "missing_required_parameter")
        if role not in ROLES:
            raise RequestError(f"Invalid value for '{w}.role': {role!r}. Supported values are: "
                               + ", ".join(repr(r) for r in ROLES) + ".", f"{w}.role", "invalid_value")
        if role != "assistant" and "content" not in m:
            raise RequestError(f"Missing required parameter: '{w}.content'.", f"{w}.content",
                               "missing_required_parameter")
        if role != "assistant" and m.get("content") is None:
            raise _bad_type(f"{w}.content", "a string or an array of content parts", None)
        _content(m.get("content"), w, role)
        if m.get("name") is not None and not isinstance(m["name"], str):
            raise _bad_type(f"{w}.name", "a string", m["name"])
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise RequestError(f"Missing required parameter: '{w}.tool_call_id'.", f"{w}.tool_call_id",
                               "missing_required_parameter")
        if role == "assistant":
            tcs = m.get("tool_calls")
            if tcs is not None and not isinstance(tcs, list):
                raise _bad_type(f"{w}.tool_calls", "an array", tcs)
            if m.get("content") is None and not tcs:
                raise RequestError(f"Invalid '{w}': an assistant message needs 'content' or 'tool_calls'.",
                                   f"{w}.content", "missing_required_parameter")
    if not any(m["role"] == "user" for m in msgs):
        raise RequestError("Invalid 'messages': no user message; the hybrid retrieves and routes on the last user "
                           "message.", "messages", "invalid_value")
    return msgs


def _tools(body: dict) -> list[dict] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array", tools)
    if len(tools) > 128:
        raise RequestError(f"Invalid 'tools': array too long. Expected an array with maximum length 128, but got an "
                           f"array with length {len(tools)} instead.", "tools", "array_above_max_length")
    seen = set()
    for i, t in enumerate(tools):
        w = f"tools[{i}]"
        if not isinstance(t, dict):
            raise _bad_type(w, "an object", t)
        if t.get("type") != "function":
            raise RequestError(f"Invalid value for '{w}.type': {t.get('type')!r}. Supported values are: 'function'.",
                               f"{w}.type", "invalid_value")
        f = t.get("function")
        if not isinstance(f, dict):
            raise RequestError(f"Missing required parameter: '{w}.function'.", f"{w}.function",
                               "missing_required_parameter")
        name = f.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RequestError(f"Invalid '{w}.function.name': {name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'.",
                               f"{w}.function.name", "invalid_value")
        if name in seen:
            raise RequestError(f"Invalid 'tools': the function name {name!r} is used twice.", f"{w}.function.name",
                               "invalid_value")
        seen.add(name)
        if f.get("parameters") is not None and not isinstance(f["parameters"], dict):
            raise _bad_type(f"{w}.function.parameters", "an object", f["parameters"])
        if f.get("description") is not None and not isinstance(f["description"], str):
            raise _bad_type(f"{w}.function.description", "a string", f["description"])
        if f.get("strict") is not None and not isinstance(f["strict"], bool):
            raise _bad_type(f"{w}.function.strict", "a boolean", f["strict"])
    return tools


def _tool_choice(body: dict, tools: list[dict] | None):
    tc = body.get("tool_choice")
    if tc is None:
        return None
    if not tools:
        raise RequestError("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                           "specified.", "tool_choice", "invalid_value")
    if isinstance(tc, str):
        if tc not in ("none", "auto", "required"):
            raise RequestError(f"Invalid value for 'tool_choice': {tc!r}. Supported values are: 'none', 'auto', "
                               "'required' or a function object.", "tool_choice", "invalid_value")
        return tc
    if not isinstance(tc, dict):
        raise _bad_type("tool_choice", "a string or an object", tc)
    if tc.get("type") != "function" or not isinstance(tc.get("function"), dict):
        raise RequestError("Invalid 'tool_choice': expected {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                           "tool_choice", "invalid_value")
    name = tc["function"].get("name")
    if name not in {t["function"]["name"] for t in tools}:
        raise RequestError(f"Invalid 'tool_choice': function {name!r} is not among 'tools'.", "tool_choice.function.name",
                           "invalid_value")
    return tc


def _response_format(body: dict) -> dict | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise _bad_type("response_format", "an object", rf)
    t = rf.get("type")
    if t not in ("text", "json_object", "json_schema"):
        raise RequestError(f"Invalid value for 'response_format.type': {t!r}. Supported values are: 'text', "
                           "'json_object', 'json_schema'.", "response_format.type", "invalid_value")
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise RequestError("Missing required parameter: 'response_format.json_schema'.",
                               "response_format.json_schema", "missing_required_parameter")
        name = js.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RequestError(f"Invalid 'response_format.json_schema.name': {name!r} does not match "
                               "'^[a-zA-Z0-9_-]{1,64}$'.", "response_format.json_schema.name", "invalid_value")
        if js.get("schema") is not None and not isinstance(js["schema"], dict):
            raise _bad_type("response_format.json_schema.schema", "an object", js["schema"])
        if js.get("strict") is not None and not isinstance(js["strict"], bool):
            raise _bad_type("response_format.json_schema.strict", "a boolean", js["strict"])
    return rf


def _stop(body: dict) -> list[str]:
    s = body.get("stop")
    if s is None:
        return []
    if isinstance(s, str):
        s = [s]
    elif not isinstance(s, list):
        raise _bad_type("stop", "a string or an array of strings", s)
    if len(s) > 4:
        raise RequestError(f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array "
                           f"with length {len(s)} instead.", "stop", "array_above_max_length")
    for i, x in enumerate(s):
        if not isinstance(x, str):
            raise _bad_type(f"stop[{i}]", "a string", x)
        if not x:
            raise RequestError(f"Invalid 'stop[{i}]': empty string.", f"stop[{i}]", "invalid_value")
    return s


def _metadata(body: dict) -> dict | None:
    md = body.get("metadata")
    if md is None:
        return None
    if not isinstance(md, dict):
        raise _bad_type("metadata", "an object", md)
    if len(md) > 16:
        raise RequestError(f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
                           f"but got {len(md)} instead.", "metadata", "object_above_max_properties")
    for k, v in md.items():
        if len(k) > 64:
            raise RequestError(f"Invalid 'metadata': key {k[:20]!r}... is longer than 64 characters.", "metadata",
                               "invalid_value")
        if not isinstance(v, str):
            raise _bad_type(f"metadata.{k}", "a string", v)
        if len(v) > 512:
            raise RequestError(f"Invalid 'metadata.{k}': string too long. Expected a string with maximum length 512, "
                               f"but got a string with length {len(v)} instead.", f"metadata.{k}",
                               "string_above_max_length")
    return md


def _logit_bias(body: dict, route: str, has_master: bool) -> None:
    lb = body.get("logit_bias")
    if lb is None:
        return
    if not isinstance(lb, dict):
        raise _bad_type("logit_bias", "an object", lb)
    for k, v in lb.items():
        if not k.lstrip("-").isdigit():
            raise RequestError(f"Invalid 'logit_bias': key {k!r} is not a token id.", "logit_bias", "invalid_value")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise RequestError(f"Invalid 'logit_bias[{k}]': expected a number from -100 to 100, got {v!r}.",
                               "logit_bias", "invalid_value")
    if route == "auto" and has_master:
        raise RequestError("'logit_bias' names token ids of one tokenizer, but with model 'regraft' either the small "
                           "model or the master may answer; send it with model 'small' or 'master'.", "logit_bias",
                           "unsupported_parameter")


KNOWN = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "stop",
         "logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "metadata",
         "store", "service_tier", "modalities", "regraft", *PASSTHROUGH, *REFUSED}


def parse_chat_request(body: Any, *, has_master: bool = True) -> ChatRequest:
    """Validate one POST /v1/chat/completions body (already JSON-decoded). Raises RequestError."""
    if not isinstance(body, dict):
        raise RequestError(f"Invalid request body: expected a JSON object, but got {_tname(body)} instead.", None,
                           "invalid_type")
    bad = find_lone_surrogate(body)
    if bad is not None:
        raise RequestError(f"Invalid '{bad}': the string contains a lone UTF-16 surrogate (e.g. \\ud800), which is not "
                           "valid Unicode; send valid UTF-8 text.", bad, "invalid_value")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise RequestError(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0], "unknown_parameter")
    for k, why in REFUSED.items():
        if body.get(k) is not None:
            raise RequestError(why, k, "unsupported_parameter")

    model = body.get("model", "regraft")
    if not isinstance(model, str):
        raise _bad_type("model", "a string", model)
    route = ROUTES.get(model.lower())
    ext = body.get("regraft")
    if ext is not None and not isinstance(ext, dict):
        raise _bad_type("regraft", "an object", ext)
    ext = ext or {}
    unknown_ext = sorted(set(ext) - {"route", "trace"})
    if unknown_ext:
        raise RequestError(f"Unrecognized argument supplied in 'regraft': {unknown_ext[0]} (expected route, trace)",
                           f"regraft.{unknown_ext[0]}", "unknown_parameter")
    if ext.get("route") is not None:
        if ext["route"] not in ("auto", "small", "master"):
            raise RequestError(f"Invalid value for 'regraft.route': {ext['route']!r}. Supported values are: 'auto', "
                               "'small', 'master'.", "regraft.route", "invalid_value")
        route = ext["route"]
    if route is None:
        raise RequestError(f"The model {model!r} does not exist; this server serves "
                           + ", ".join(repr(m) for m in MODEL_IDS) + ".", "model", "model_not_found", status=404)
    trace = _bool(ext, "trace")

    messages = _messages(body.get("messages"))
    stream = bool(_bool(body, "stream"))
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not stream:
            raise RequestError("Invalid value for 'stream_options': 'stream_options' is only allowed when 'stream' "
                               "is enabled.", "stream_options", "invalid_value")
        if not isinstance(so, dict):
            raise _bad_type("stream_options", "an object", so)
        extra = sorted(set(so) - {"include_usage", "include_obfuscation"})
        if extra:
            raise RequestError(f"Unrecognized argument supplied in 'stream_options': {extra[0]}",
                               f"stream_options.{extra[0]}", "unknown_parameter")
        include_usage = bool(_bool(so, "include_usage"))
        if _bool(so, "include_obfuscation"):
            raise RequestError("'stream_options.include_obfuscation' is not supported: regraft adds no obfuscation "
                               "padding; set it to false.", "stream_options.include_obfuscation",
                               "unsupported_parameter")

    mt = _int(body, "max_tokens", lo=1)
    mct = _int(body, "max_completion_tokens", lo=1)
    if mt is not None and mct is not None and mt != mct:
        raise RequestError("'max_tokens' and 'max_completion_tokens' are both set, to different values; set only "
                           "'max_completion_tokens'.", "max_tokens", "invalid_value")
    max_tokens = mct if mct is not None else mt
    mparam = "max_completion_tokens" if mct is not None else ("max_tokens" if mt is not None else None)
    n = _int(body, "n", lo=1, hi=128) or 1
    stop = _stop(body)
    logprobs = bool(_bool(body, "logprobs"))
    top_logprobs = _int(body, "top_logprobs", lo=0, hi=20)
    if top_logprobs is not None and not logprobs:
        raise RequestError("Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is "
                           "used.", "top_logprobs", "invalid_value")
    rf = _response_format(body)
    tools = _tools(body)
    tool_choice = _tool_choice(body, tools)
    ptc = _bool(body, "parallel_tool_calls")
    if ptc is not None and not tools:
        raise RequestError("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when "
                           "'tools' are specified.", "parallel_tool_calls", "invalid_value")
    metadata = _metadata(body)
    if _bool(body, "store"):
        raise RequestError("'store': true is not supported: regraft does not store completions.", "store",
                           "unsupported_parameter")
    _enum(body, "service_tier", ("auto", "default"))
    mods = body.get("modalities")
    if mods is not None:
        if not isinstance(mods, list) or not all(isinstance(x, str) for x in mods):
            raise _bad_type("modalities", "an array of strings", mods)
        if set(mods) - {"text"}:
            raise RequestError("Invalid value for 'modalities': regraft serves text models; use [\"text\"].",
                               "modalities", "unsupported_parameter")

    # sampling and the rest: validated here, passed to the backend as given
    _num(body, "temperature", 0, 2)
    _num(body, "top_p", 0, 1)
    _int(body, "seed")
    _num(body, "presence_penalty", -2, 2)
    _num(body, "frequency_penalty", -2, 2)
    _str(body, "user", 256)
    _str(body, "safety_identifier", 64)
    _str(body, "prompt_cache_key", 1024)
    _enum(body, "reasoning_effort", ("none", "minimal", "low", "medium", "high"))
    _int(body, "top_k", lo=-1)
    _num(body, "min_p", 0, 1)
    _num(body, "repetition_penalty", 0, None, lo_open=True)
    ctk = body.get("chat_template_kwargs")
    if ctk is not None and not isinstance(ctk, dict):
        raise _bad_type("chat_template_kwargs", "an object", ctk)
    _logit_bias(body, route, has_master)
    params = {k: body[k] for k in PASSTHROUGH if body.get(k) is not None}
    return ChatRequest(model=model, route=route, messages=messages, stream=stream, include_usage=include_usage,
                       max_tokens=max_tokens, max_tokens_param=mparam, n=n, stop=stop, logprobs=logprobs,
                       top_logprobs=top_logprobs, response_format=rf, tools=tools, tool_choice=tool_choice,
                       parallel_tool_calls=ptc, params=params, metadata=metadata, trace=trace)


# -- helpers the orchestrator uses on answers ---------------------------------------------------------------

def apply_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop sequence (a backend that ignored ``stop`` is corrected here)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def json_violation(answer: str, mode: str | None, schema: dict | None) -> str | None:
    """Why ``answer`` is not the JSON that response_format asked for (None when it is, or nothing was asked)."""
    import json

    if mode is None:
        return None
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):
        return "answer is not valid JSON (response_format " + mode + ")"
    if mode == "json_object" and not isinstance(value, dict):
        return "answer is JSON but not an object (response_format json_object)"
    if schema:
        try:
            import jsonschema
        except ImportError:
            t = schema.get("type")
            want = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int,
                    "boolean": bool}.get(t) if isinstance(t, str) else None
            if want is not None and not isinstance(value, want):
                return f"answer is JSON of the wrong type (schema asks {t})"
            return None
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as e:
            return "answer does not match the response_format schema: " + " ".join(str(e.message).split())[:120]
        except jsonschema.SchemaError:
            return None
    return None
