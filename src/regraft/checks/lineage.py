"""Lineage from evidence: is the target the adapter's declared base, a sibling of it, derived from it, or unrelated?

The evidence, strongest first, and what each can decide:

1. ``weights``: drift measured between local checkpoints (RG205) -- same / sibling / unrelated;
2. ``config``: the declared base resolved like any MODEL (local folder, HF cache, catalog) and its trunk facts
   (hidden size, layers, heads, vocabulary...) compared with the target's: different facts are positive evidence
   of another model; equal facts confirm nothing on their own (equal shapes are not equal weights);
3. ``data``: ``catalog/lineage.json`` -- renamed repos, mirrors and quantised / converted re-uploads, derived
   models, known trunks, each with a source;
4. ``names``: the family-size stem (``Qwen3-30B-A3B-Instruct-2507`` -> ``qwen3-30b-a3b``).

``unrelated`` needs positive evidence (different config facts, two known different trunks, large drift); a name
regraft cannot place gives ``unknown`` ("lineage unconfirmed") with the way to confirm it. Local paths of any OS
(backslashes, drive letters, ``~``, relative) and HF-cache paths are normalised before anything is compared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from regraft import catalog

_CACHE_PATH = re.compile(r"models--([^/]+?)--([^/]+)")
_DRIVE = re.compile(r"^[A-Za-z]:/")
# ModelScope stores a model id's '.' as '___' in its cache folders ('.cache/modelscope/hub/models/Qwen/Qwen2___5-7B-
# Instruct'; modelscope/modelscope modelscope/hub/file_download.py: ``name = name.replace('.', '___')``).
_MS_MASK = "___"
_STEM_SUFFIX = re.compile(r"(-(base|instruct|chat|thinking|it|pt|hf|\d{4}|v\d+(\.\d+)*))+$", re.I)
_NOT_A_MODEL = re.compile(r"^(checkpoint-\d+|final|merged|output|outputs|adapter|lora|model|snapshot|\d+|"
                          r"[0-9a-f]{40}|latest|best|last)$", re.I)
TRUNK_FACTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size", "moe_intermediate_size", "num_experts", "vocab_size")

# Families whose tokenizers share one vocabulary (ids and merges): Qwen2 / 2.5 / 3 (incl. MoE, Next, Coder).
TOKENIZER_FAMILY = {
    "qwen2": "qwen2-vocab", "qwen2_moe": "qwen2-vocab", "qwen3": "qwen2-vocab", "qwen3_moe": "qwen2-vocab",
    "qwen3_next": "qwen2-vocab", "qwen3_5": "qwen3.5-vocab", "qwen3_5_moe": "qwen3.5-vocab",
    "llama": "llama3-vocab", "mistral": "mistral-v3-vocab",
}


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(resources.files("regraft.catalog").joinpath("lineage.json").read_text(encoding="utf-8"))


# --- names and paths -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseName:
    """``base_model_name_or_path`` as written, and what it names."""

    raw: str
    kind: str  # repo (org/name) | name (no org) | hf-cache | local (a path)
    name: str  # repo id, bare name, or the path's last meaningful component ('' when none)
    path: str | None = None  # the path with forward slashes (local and hf-cache kinds)

    @property
    def display(self) -> str:
        return self.name if self.kind in ("repo", "name", "hf-cache") else (self.path or self.raw)


def parse_base(raw: str) -> BaseName:
    """Normalise a declared base: repo ids, HF-cache snapshot paths and local paths of any OS."""
    text = raw.strip().strip("\"'")
    s = text.replace("\\", "/")
    m = _CACHE_PATH.search(s)
    if m:
        return BaseName(raw, "hf-cache", f"{m.group(1)}/{m.group(2)}", s)
    local = (s.startswith(("/", "~", "./", "../", "//")) or s in (".", "..") or bool(_DRIVE.match(s))
             or s.count("/") > 1 or "\\" in text)
    if not local:
        return BaseName(raw, "repo" if "/" in s else "name", s.rstrip("/"))
    parts = [p for p in s.rstrip("/").split("/") if p and not _DRIVE.match(p + "/")]
    name, org = "", ""
    for i in range(len(parts) - 1, -1, -1):  # '.../Qwen3-8B/checkpoint-500' -> 'Qwen3-8B'
        if parts[i] not in (".", "..", "~") and not _NOT_A_MODEL.match(parts[i]):
            name, org = parts[i], parts[i - 1] if i else ""
            break
    name = name.replace(_MS_MASK, ".")  # a ModelScope cache folder: 'Qwen3-0___6B' is Qwen3-0.6B
    if name and org in _known_orgs():
        name = f"{org}/{name}"  # '/models/Qwen/Qwen3-8B' (ModelScope / hub-like layouts)
    return BaseName(raw, "local", name, s)


def normalise_base(name: str | None) -> str | None:
    """What a message calls the declared base: the repo id, or the normalised path."""
    if not name:
        return None
    return parse_base(name).display


@lru_cache(maxsize=1)
def _known_orgs() -> frozenset:
    orgs = {k for k in data()["mirror_orgs"] if not k.startswith("_")}
    return frozenset(orgs | {i.split("/")[0] for i in catalog.model_ids()})


def stem(name: str) -> str:
    """Family-size trunk: 'Qwen/Qwen3-30B-A3B-Instruct-2507' -> 'qwen3-30b-a3b'; 'Meta-Llama-3-8B' -> 'llama-3-8b'."""
    short = name.rstrip("/").split("/")[-1]
    short = _strip_quant(short)[0]
    out = _STEM_SUFFIX.sub("", short).lower()
    return out[5:] if out.startswith("meta-llama") else out


def _strip_quant(short: str) -> tuple[str, list[str]]:
    found = []
    changed = True
    while changed:
        changed = False
        for q in data()["quant_suffixes"]:
            if short.lower().endswith(q["suffix"].lower()) and len(short) > len(q["suffix"]):
                short, changed = short[: -len(q["suffix"])], True
                found.append(q["what"])
                break
    return short, found


# --- canonical names -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canon:
    """A name resolved through lineage.json: the original repo it stands for, and how that was decided."""

    id: str  # canonical repo id (or the bare name when no org can be told)
    steps: tuple[str, ...] = ()  # evidence, each with its source
    placed: bool = False  # in the catalog or lineage.json's known models: its trunk is known
    mirror: bool = True  # False: a re-upload naming by an org regraft does not list (weights unverified)


def _lookup(table: list[dict], key: str, name: str, by_short: bool) -> dict | None:
    """The entry whose ``key`` is ``name`` (or, with ``by_short``, whose name without the org is)."""
    low = name.lower()
    short = low.split("/")[-1]
    for e in table:
        k = e[key].lower()
        if k == low or (by_short and k.split("/")[-1] == short):
            return e
    return None


def _is_mirror_org(org: str) -> bool:
    return bool(org) and not org.startswith("_") and org in data()["mirror_orgs"]


@lru_cache(maxsize=512)
def canonical(name: str) -> Canon:
    """'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' -> meta-llama/Llama-3.1-8B-Instruct, with the steps."""
    d = data()
    steps: list[str] = []
    cur = name.strip().rstrip("/")
    mirror = True
    alias = _lookup(d["aliases"], "name", cur, False)
    if alias:
        steps.append(f"{cur} is a re-upload of {alias['is']} ({alias['source']})")
        cur = alias["is"]
    org, _, short = cur.rpartition("/")
    short2, quants = _strip_quant(short)
    if quants:
        steps.append(f"{cur} is a re-upload of {short2} ({', '.join(quants)})")
        short = short2
        if org and org not in d["mirror_orgs"]:
            mirror = False
    if org and not _is_mirror_org(org) and not quants and not alias:
        mirror = False
    cur = f"{org}/{short}" if org else short
    alias = _lookup(d["aliases"], "name", cur, False)
    if alias and alias["is"].lower() != cur.lower():
        steps.append(f"{cur} is a re-upload of {alias['is']} ({alias['source']})")
        cur = alias["is"]
    rename = _lookup(d["renames"], "from", cur, _is_mirror_org(cur.rpartition("/")[0]) or "/" not in cur)
    if rename:
        steps.append(f"{rename['from']} was renamed {rename['to']} ({rename['source']})")
        cur = rename["to"]
    cid = catalog.find_model(cur.split("/")[-1]) if mirror or "/" not in cur else catalog.find_model(cur)
    known = _known_names()
    if cid is None:
        low_short = cur.split("/")[-1].lower()
        cid = next((k for k in known if k.split("/")[-1].lower() == low_short), None) if mirror else \
            next((k for k in known if k.lower() == cur.lower()), None)
    if cid is not None:
        if cid.lower() != cur.lower() and "/" in cur and cur.split("/")[0] != cid.split("/")[0]:
            org0 = cur.split("/")[0]
            steps.append(f"{org0} is a mirror organisation ({d['mirror_orgs'].get(org0, '-').split(';')[0]})")
        return Canon(cid, tuple(steps), True, mirror)
    if "/" not in cur or _is_mirror_org(cur.split("/")[0]) and mirror:
        cur = cur.split("/")[-1]
        fam = next((f["org"] for f in d["family_orgs"] if re.match(f["pattern"], cur, re.I)), None)
        cur = f"{fam}/{cur}" if fam else cur
    return Canon(cur, tuple(steps), False, mirror)


@lru_cache(maxsize=1)
def _known_names() -> tuple[str, ...]:
    return tuple(data()["known_models"]["names"])


def _derived(child: str, parent: str) -> dict | None:
    for e in data()["derived"]:
        if e["model"].lower() == child.lower() and stem(e["from"]) == stem(parent):
            return e
    return None


def _unconfirmed_pair(a: str, b: str) -> dict | None:
    for e in data()["unconfirmed_trunks"]:
        if {a, b} == set(e["trunks"]):
            return e
    return None


# --- the decision ----------------------------------------------------------------------------------------------


@dataclass
class Lineage:
    relation: str  # same | sibling | derived | unrelated | unknown
    evidence: str  # weights | config | data | names | none
    why: list[str] = field(default_factory=list)
    how_to_confirm: str = ""
    base: str | None = None  # the declared base, normalised for messages

    @property
    def text(self) -> str:
        return "; ".join(self.why)


def _facts(spec) -> dict:
    return {k: spec.get(k) for k in TRUNK_FACTS if spec.get(k) is not None}


def facts_diff(base, target) -> list[str]:
    """Trunk facts that both configs state and that differ: 'vocab_size 128256 vs 32768'."""
    a, b = _facts(base), _facts(target)
    return [f"{k} {a[k]} vs {b[k]}" for k in TRUNK_FACTS if k in a and k in b and a[k] != b[k]]


def _confirm_hint(base: BaseName, target) -> str:
    tgt = target.path or target.name
    return (f"to confirm, give the base's own weights: `regraft check BASE_DIR {tgt} --adapter ADAPTER --drift always` "
            f"(or `regraft drift BASE_DIR {tgt}`); or set base_model_name_or_path to the Hub id it was trained on")


def relate(declared: str | None, target, base_spec=None) -> Lineage:
    """The lineage of ``target`` (a ModelSpec) relative to the adapter's declared base.

    ``base_spec``: the declared base resolved to a ModelSpec when it could be (see :func:`resolve_declared`)."""
    if not declared:
        return Lineage("unknown", "none", ["the adapter names no base model"], "set base_model_name_or_path")
    base = parse_base(declared)
    shown = base.display
    t_names = {target.name.rstrip("/").replace("\\", "/").lower()}
    if target.path is not None:
        t_names.add(str(target.path).replace("\\", "/").rstrip("/").lower())
    if base.raw.strip().replace("\\", "/").rstrip("/").lower() in t_names or \
            (base.kind in ("repo", "hf-cache") and base.name.lower() in t_names):
        if base.kind == "hf-cache":
            return Lineage("same", "names", [f"{base.raw} is the HF-cache snapshot of {base.name}",
                                             f"{base.name} is the target"], base=shown)
        return Lineage("same", "names", [f"{shown} is the target"], base=shown)
    if base.kind == "local" and base_spec is not None and target.path is not None and base_spec.path is not None \
            and str(base_spec.path.resolve()) == str(target.path.resolve()):
        return Lineage("same", "names", [f"{shown} is the target's folder"], base=shown)
    diff = facts_diff(base_spec, target) if base_spec is not None else []
    if diff:
        return Lineage("unrelated", "config", [f"{shown} resolves ({base_spec.source}) to a model whose config "
                                               f"differs from the target's: {', '.join(diff)}"], base=shown)
    if not base.name:
        return Lineage("unknown", "none", [f"{shown} is a local path whose folder names no model"],
                       _confirm_hint(base, target), shown)
    cb, ct = canonical(base.name), canonical(_label(target))
    why = list(cb.steps)
    if base.kind == "local":
        why.insert(0, f"{shown} is a local path{'' if base_spec is not None else ' not on this machine'}; "
                      f"its folder names {base.name}")
    if base.kind == "hf-cache":
        why.insert(0, f"{base.raw} is the HF-cache snapshot of {base.name}")
    agree = " (config facts agree)" if base_spec is not None and _facts(base_spec) else ""
    evidence = "data" if cb.steps else "names"
    if cb.id.lower() == ct.id.lower():
        if not cb.mirror:
            why.append(f"named like a re-upload of {cb.id}, by an organisation regraft does not list as a mirror")
            return Lineage("sibling", evidence, why + [f"same trunk by name{agree}, weights unverified"],
                           _confirm_hint(base, target), shown)
        if base.kind == "local" and base_spec is None:
            why.append(f"same name as the target{agree}")
            return Lineage("same", "names", why, base=shown)
        return Lineage("same", evidence, why + [f"{cb.id} is the target{agree}"], base=shown)
    sb, st = stem(cb.id), stem(ct.id)
    der = _derived(ct.id, cb.id) or _derived(cb.id, ct.id)
    if der:
        why.append(f"{der['model']} is derived from {der['from']} ({der['how']}; {der['source']})")
        return Lineage("derived", "data", why, "measure with `regraft drift` when both are local", shown)
    if sb == st:
        var = _variant_note(cb.id, ct.id)
        why.append(f"{cb.id} and {ct.id} are post-training variants of one trunk ({sb}){var}{agree}")
        return Lineage("sibling", "names", why, base=shown)
    pair = _unconfirmed_pair(sb, st)
    if pair:
        why.append(f"{cb.id} vs {ct.id}: {pair['why']} ({pair['source']})")
        return Lineage("unknown", "data", why, _confirm_hint(base, target), shown)
    if cb.placed and ct.placed and cb.mirror:
        why.append(f"{cb.id} ({sb}) and {ct.id} ({st}) are different known trunks")
        return Lineage("unrelated", "data" if cb.steps else "names", why, base=shown)
    missing = [n for n, c in ((cb.id, cb), (ct.id, ct)) if not c.placed]
    why.append(f"regraft cannot place {' nor '.join(missing) or cb.id} in a known lineage{agree}")
    return Lineage("unknown", "none", why, _confirm_hint(base, target), shown)


def _label(target) -> str:
    """The target's name for lineage: its repo id, or a folder's name ('org/name' for '/models/Qwen/Qwen3-8B')."""
    return parse_base(target.name).name or parse_base(str(target.path or "")).name or target.name


def _variant_note(a: str, b: str) -> str:
    notes = data()["sibling_suffixes"]
    for key, text in notes.items():
        if key.startswith("_"):
            continue
        pat = re.compile(rf"-{re.escape(key)}($|-)", re.I)
        if bool(pat.search(a.split("/")[-1])) != bool(pat.search(b.split("/")[-1])):
            return f"; {key}: {text}"
    return ""


def resolve_declared(declared: str | None, target=None):
    """The declared base as a ModelSpec (local folder, HF cache, catalog; never the Hub), or None."""
    if not declared:
        return None
    from regraft.errors import RegraftError
    from regraft.inspection.resolve import read_model_folder

    base = parse_base(declared)
    from pathlib import Path

    try:
        if base.kind == "local" or base.kind == "hf-cache":
            p = Path(base.path or base.raw).expanduser()
            if p.is_dir() and (p / "config.json").is_file():
                return read_model_folder(p)
            if base.kind == "local":
                return None
        from regraft.inspection import hub
        from regraft.inspection.resolve import catalog_model

        repo = base.name if base.kind in ("repo", "hf-cache") else None
        if repo:
            snap = hub.cached_snapshot(repo)
            if snap is not None:
                return read_model_folder(snap, name=repo, origin="hf-cache")
        cid = catalog.find_model(base.name) if base.name else None
        if cid is None and base.name:
            c = canonical(base.name)
            cid = catalog.find_model(c.id) if c.mirror else None
        return catalog_model(cid) if cid else None
    except (RegraftError, OSError, ValueError):
        return None


def relation(declared: str | None, target_name: str, target_path: str | None = None) -> str:
    """same | sibling | derived | unrelated | unknown, from names and lineage.json only (for port plans)."""
    from pathlib import Path

    from regraft.inspection.model import ModelSpec

    t = ModelSpec(name=target_name, origin="local" if target_path else "catalog", config={},
                  path=Path(target_path) if target_path else None)
    return relate(declared, t).relation
