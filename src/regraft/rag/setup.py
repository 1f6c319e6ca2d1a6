"""The RAG setup file: embedding model, chunking, top_k, prompt templates, answer/thinking budget, stop strings.

YAML or JSON, sections or flat aliases::

    model: Qwen/Qwen3-30B-A3B-Base           # the LLM it was built for (optional; `check SOURCE` wins)
    embedding: {model: BAAI/bge-m3}
    chunking: {size: 512, unit: tokens, overlap: 64, tokenizer: Qwen/Qwen3-30B-A3B-Base}
    retrieval: {top_k: 8}
    prompt:
      system: "Answer from the context."
      user: "Context:\\n{context}\\n\\nQuestion: {question}"
      separator: "\\n\\n"
      question_tokens: 256
    generation: {answer_tokens: 1024, thinking_budget: 0, enable_thinking: false, stop: ["<|im_end|>"],
                 context_length: 32768}
    index: {chunks: 120000, embedding_model: BAAI/bge-m3, path: ./index}
    samples: [docs/a.md, docs/b.md]         # optional: real text to measure tokens per chunk

Unknown keys are reported (never silently ignored); a wrong type is an error naming the key.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from regraft.errors import FileFormatError, InputError

# (section, key) -> (attribute, type); flat aliases below
FIELDS = {
    ("", "model"): ("model", "str"),
    ("embedding", "model"): ("embedding_model", "str"), ("embedding", "dimensions"): ("embedding_dims", "int"),
    ("chunking", "size"): ("chunk_size", "int"), ("chunking", "unit"): ("chunk_unit", "str"),
    ("chunking", "overlap"): ("chunk_overlap", "int"), ("chunking", "tokenizer"): ("chunk_tokenizer", "str"),
    ("retrieval", "top_k"): ("top_k", "int"),
    ("prompt", "system"): ("system", "str"), ("prompt", "user"): ("user", "str"),
    ("prompt", "separator"): ("separator", "str"), ("prompt", "question_tokens"): ("question_tokens", "int"),
    ("prompt", "chunk_template"): ("chunk_template", "str"),
    ("prompt", "format"): ("prompt_format", "str"), ("prompt", "rendered_example"): ("rendered_example", "str"),
    ("prompt", "template"): ("template_from", "str"),
    ("generation", "answer_tokens"): ("answer_tokens", "int"),
    ("generation", "thinking_budget"): ("thinking_budget", "int"),
    ("generation", "enable_thinking"): ("enable_thinking", "bool"), ("generation", "stop"): ("stop", "strlist"),
    ("generation", "context_length"): ("context_length", "int"),
    ("index", "chunks"): ("index_chunks", "int"), ("index", "embedding_model"): ("index_embedding_model", "str"),
    ("index", "path"): ("index_path", "str"),
    ("", "samples"): ("samples", "strlist"),
}
ALIASES = {
    "embedding_model": ("embedding", "model"), "chunk_size": ("chunking", "size"), "chunk_unit": ("chunking", "unit"),
    "chunk_overlap": ("chunking", "overlap"), "top_k": ("retrieval", "top_k"), "system_prompt": ("prompt", "system"),
    "system": ("prompt", "system"), "user_template": ("prompt", "user"), "user_prompt": ("prompt", "user"),
    "answer_tokens": ("generation", "answer_tokens"), "reserved_answer_tokens": ("generation", "answer_tokens"),
    "max_tokens": ("generation", "answer_tokens"), "thinking_budget": ("generation", "thinking_budget"),
    "enable_thinking": ("generation", "enable_thinking"), "stop": ("generation", "stop"),
    "context_length": ("generation", "context_length"), "question_tokens": ("prompt", "question_tokens"),
}
SECTION_ALIASES = {"retriever": "retrieval", "chunk": "chunking", "chunker": "chunking", "embeddings": "embedding",
                   "llm": "generation", "templates": "prompt"}
UNITS = {"tokens": "tokens", "token": "tokens", "characters": "characters", "chars": "characters",
         "character": "characters"}
DEFAULT_QUESTION_TOKENS = 256


@dataclass
class RagSetup:
    path: Path
    model: str | None = None
    embedding_model: str | None = None
    embedding_dims: int | None = None
    chunk_size: int | None = None
    chunk_unit: str = "tokens"
    chunk_overlap: int = 0
    chunk_tokenizer: str | None = None
    top_k: int | None = None
    system: str | None = None
    user: str | None = None
    separator: str = "\n\n"
    chunk_template: str | None = None
    prompt_format: str = "chat"  # chat | plain (a Base model: no chat template)
    rendered_example: str | None = None  # written by `port rag`: the prompt as the target's template renders it
    template_from: str | None = None
    question_tokens: int = DEFAULT_QUESTION_TOKENS
    answer_tokens: int | None = None
    thinking_budget: int | None = None
    enable_thinking: bool | None = None
    stop: list[str] = field(default_factory=list)
    context_length: int | None = None
    index_chunks: int | None = None
    index_embedding_model: str | None = None
    index_path: str | None = None
    samples: list[str] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)
    given: dict = field(default_factory=dict)  # attribute -> key as written
    raw: dict = field(default_factory=dict)

    def where(self, attr: str) -> str:
        return self.given.get(attr, attr)

    def sample_texts(self) -> list[str]:
        out = []
        for s in self.samples or []:
            p = Path(s).expanduser()
            if not p.is_absolute():
                p = self.path.parent / p
            if not p.is_file():
                raise InputError(f"{self.path}: samples entry '{s}' is not a file. Expected paths to text files, "
                                 "relative to the setup file.")
            from regraft.outputs import note_read

            note_read(p)
            out.append(p.read_text(encoding="utf-8", errors="replace"))
        return out


_TYPES = {"int": "an integer", "str": "a string", "bool": "true or false", "strlist": "a string or list of strings"}


def _short(value) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int over 4300 digits, a structure nested too deeply
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _coerce(path: Path, key: str, typ: str, value):
    def bad():
        return FileFormatError(f"{path}: '{key}' must be {_TYPES[typ]}, got {_short(value)} ({type(value).__name__}). "
                               f"Fix the value of '{key}'.")

    if value is None:
        return None
    if typ == "int":
        from regraft.numbers import NumberError, parse_int

        if isinstance(value, float):
            raise bad()
        try:  # a plain decimal (an int, or digits in a string), at most 30 digits: '²', '--5', 10**400 refused
            value = parse_int(value.strip() if isinstance(value, str) else value, key, strings=True)
        except NumberError:
            raise bad() from None
        if value < 0:
            raise FileFormatError(f"{path}: '{key}' must be >= 0, got {value}.")
        return value
    if typ == "str":
        if not isinstance(value, str):
            raise bad()
        return value
    if typ == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if typ == "strlist":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return list(value)
        raise bad()
    return value


def read_rag(path: str | Path) -> RagSetup:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"RAG setup '{path}' does not exist (or is not a file). Expected a YAML/JSON file with "
                         "embedding, chunking, retrieval, prompt and generation settings.")
    st = p.stat()
    return _read_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=16)
def _read_cached(path: str, _mtime: int, _size: int) -> RagSetup:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"{p}: not a UTF-8 text file; expected a YAML/JSON RAG setup.") from None
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise FileFormatError(f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}.") from None
        except (ValueError, RecursionError) as e:  # an integer over 4300 digits; nesting deeper than the stack
            raise FileFormatError(f"{p}: unreadable JSON ({type(e).__name__}: {str(e).split(';')[0][:80]}).") from None
    else:
        import yaml

        from regraft.inspection.files import load_yaml

        try:
            doc = load_yaml(text)
        except (RecursionError, ValueError) as e:
            raise FileFormatError(f"{p}: unreadable YAML ({type(e).__name__}: {str(e).split(';')[0][:80]}).") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise FileFormatError(f"{p}: invalid YAML{where}: {getattr(e, 'problem', None) or e}.") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"{p}: expected a mapping of RAG settings, got {type(doc).__name__}.")
    from regraft.inspection.files import check_depth

    try:
        check_depth(doc)
    except ValueError as e:
        raise FileFormatError(f"{p}: settings {e}. Expected a mapping of RAG settings.") from None
    return parse_rag(doc, p)


def parse_rag(doc: dict, path: Path) -> RagSetup:
    r = RagSetup(path, raw=doc)
    sections = {s for s, _ in FIELDS if s}

    def put(section: str, key: str, value, written: str):
        attr, typ = FIELDS[(section, key)]
        setattr(r, attr, _coerce(path, written, typ, value))
        r.given[attr] = written

    for k, v in doc.items():
        sk = SECTION_ALIASES.get(k, k)
        if sk in sections and isinstance(v, dict):
            for kk, vv in v.items():
                if (sk, kk) in FIELDS:
                    put(sk, kk, vv, f"{k}.{kk}")
                elif kk in ALIASES and ALIASES[kk][0] == sk:
                    put(*ALIASES[kk], vv, f"{k}.{kk}")
                else:
                    r.unknown.append((f"{k}.{kk}", f"not a '{sk}' setting"))
        elif sk in sections and sk == "embedding" and isinstance(v, str):
            put("embedding", "model", v, k)
        elif sk in sections:
            raise FileFormatError(f"{path}: '{k}' must be a mapping of {sk} settings, got {type(v).__name__}.")
        elif ("", k) in FIELDS:
            put("", k, v, k)
        elif k in ALIASES:
            put(*ALIASES[k], v, k)
        else:
            r.unknown.append((k, "not a RAG setting"))
    unit = UNITS.get(str(r.chunk_unit).lower())
    if unit is None:
        raise FileFormatError(f"{path}: '{r.where('chunk_unit')}' must be 'tokens' or 'characters', got "
                              f"{r.chunk_unit!r}.")
    r.chunk_unit = unit
    r.prompt_format = (r.prompt_format or "chat").lower()
    if r.prompt_format not in ("chat", "plain"):
        raise FileFormatError(f"{path}: '{r.where('prompt_format')}' must be 'chat' or 'plain', got {r.prompt_format!r}.")
    r.chunk_overlap = r.chunk_overlap or 0
    r.question_tokens = DEFAULT_QUESTION_TOKENS if r.question_tokens is None else r.question_tokens
    r.separator = "\n\n" if r.separator is None else r.separator
    r.stop = r.stop or []
    for attr in ("chunk_size", "top_k", "user"):
        if getattr(r, attr) is None:
            raise FileFormatError(f"{path}: '{_written_default(attr)}' is missing; a RAG setup needs chunk size, "
                                  "top_k and a user prompt template with {context} and {question}.")
    if r.chunk_size == 0 or r.top_k == 0:
        raise FileFormatError(f"{path}: chunk size and top_k must be > 0.")
    if r.chunk_overlap >= r.chunk_size:
        raise FileFormatError(f"{path}: '{r.where('chunk_overlap')}' ({r.chunk_overlap}) must be smaller than the "
                              f"chunk size ({r.chunk_size}).")
    check_placeholders(r)
    return r


def _written_default(attr: str) -> str:
    for (s, k), (a, _) in FIELDS.items():
        if a == attr:
            return f"{s}.{k}" if s else k
    return attr


_ALLOWED = {"context", "question"}


def placeholders(template: str, where: str, path: Path) -> set[str]:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise FileFormatError(f"{path}: '{where}' is not a valid template ({e}); use {{context}} and {{question}}, "
                              "and double literal braces ({{ }}).") from None
    return {re.split(r"[.\[!:]", n)[0] for n in names}


def check_placeholders(r: RagSetup) -> None:
    user = placeholders(r.user, r.where("user"), r.path)
    system = placeholders(r.system, r.where("system"), r.path) if r.system else set()
    for where, text in ((r.where("user"), r.user), (r.where("system"), r.system)):
        for _, field_name, spec, conv in string.Formatter().parse(text or ""):
            if field_name is not None and field_name in _ALLOWED and (spec or conv):
                raise FileFormatError(f"{r.path}: '{where}' has {{{field_name}{'!' + conv if conv else ''}"
                                      f"{':' + spec[:20] if spec else ''}}}; placeholders take no conversion or "
                                      "format spec: write {context} and {question}.")
            if field_name is not None and field_name not in _ALLOWED and field_name.split(".")[0].split("[")[0] in \
                    _ALLOWED:
                raise FileFormatError(f"{r.path}: '{where}' has {{{field_name[:40]}}}; only plain {{context}} and "
                                      "{question} are filled (double literal braces: {{ }}).")
    unknown = (user | system) - _ALLOWED
    if unknown:
        raise FileFormatError(f"{r.path}: unknown placeholder(s) {sorted(unknown)} in the prompt; only {{context}} "
                              "and {question} are filled (double literal braces: {{ }}).")
    missing = {"question"} - user
    if "context" not in user | system:
        missing.add("context")
    if missing:
        raise FileFormatError(f"{r.path}: the prompt has no {', '.join('{' + m + '}' for m in sorted(missing))} "
                              f"placeholder; '{r.where('user')}' must contain {{question}} and the system or user "
                              "template {context}.")


def fill(template: str | None, context: str, question: str) -> str | None:
    if template is None:
        return None
    return template.format(context=context, question=question)
