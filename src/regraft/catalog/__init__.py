"""The built-in catalog: facts as data files, each with its source.

- ``models/<org>__<name>.json``: config.json values of real models, with ``_source`` and ``_status`` (one of
  :data:`STATUSES`). A ``partial`` entry only holds evidenced fields. Hash-verified entries also carry
  ``_sha256``/``_bytes`` (of the Hub file) and ``_hash_pins`` (the public files that pin that hash).
- ``architectures/<model_type>.json``: module names, roles and shape expressions per model_type.
- ``runtimes/<runtime>.json``: what each serving runtime accepts, per version, with sources.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from importlib import resources

_PKG = "regraft.catalog"

# How an entry's config values were obtained, most to least direct (docs/catalog.md).
STATUSES = {
    "verbatim": "a copy of the Hub config.json (hash-verified where _sha256 is given)",
    "verbatim-quote": "quoted config text completed with a field from a second copy (see _notes)",
    "reconstructed-hash-verified": "no full text copy seen: a sibling's verbatim config changed only in evidenced "
                                   "fields, whose bytes match the Hub file's published SHA-256",
    "reserialized": "the real values, written back by a tool (renamed or extra keys; types may differ)",
    "partial": "only the fields some evidence supports; the rest is unknown and never guessed",
}


def _read(folder: str, filename: str) -> dict:
    return json.loads(resources.files(_PKG).joinpath(folder, filename).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def model_ids() -> dict[str, str]:
    """Hub id -> catalog file name, for every catalog model."""
    out = {}
    for entry in resources.files(_PKG).joinpath("models").iterdir():
        if entry.name.endswith(".json"):
            out[entry.name[:-5].replace("__", "/", 1)] = entry.name
    return dict(sorted(out.items()))


def find_model(name: str) -> str | None:
    """The catalog id for ``name`` (case-insensitive, with or without the org), or None."""
    ids = model_ids()
    if name in ids:
        return name
    low = name.lower()
    for mid in ids:
        if mid.lower() == low or mid.split("/", 1)[1].lower() == low:
            return mid
    return None


@lru_cache(maxsize=None)
def model_entry(model_id: str) -> dict:
    """The raw catalog JSON of a model (metadata keys start with '_')."""
    return _read("models", model_ids()[model_id])


def _size_key(name: str) -> tuple:
    """Total size in billions from the name (Qwen3-30B-A3B -> 30, Qwen3.8-2.4T-A95B -> 2400, gpt-oss-20b -> 20)."""
    m = re.search(r"-(\d+(?:\.\d+)?)([BT])(?=-|$)", name.split("/")[-1], re.I)
    return (float(m.group(1)) * (1000 if m.group(2).upper() == "T" else 1) if m else 0.0,)


def _version(name: str) -> float | None:
    m = re.match(r"[A-Za-z]+(\d+(?:\.\d+)?)", name.split("/")[-1])
    return float(m.group(1)) if m else None


def nearest_models(name: str, n: int = 4) -> list[str]:
    """Real catalog models closest to a (possibly invented) name: Qwen3-70B -> Qwen3-32B, ..., Qwen2.5-72B-Instruct;
    Qwen3.7-27B (no such release) -> Qwen3.6-27B, Qwen3.8-27B (same size, nearest versions first)."""
    ids = list(model_ids())
    short = name.split("/")[-1]
    picks: list[str] = []
    m = re.match(r"([A-Za-z]+[\d.]*)-(\d+(?:\.\d+)?)[BT]", short, re.I)
    if m:  # same family at the closest sizes first, then any family at the closest size and version
        fam, size, ver = m.group(1).lower(), _size_key(short)[0], _version(short)
        ver_gap = (lambda i: round(abs((_version(i) or 0) - ver), 3)) if ver is not None else (lambda i: 0)
        sized = sorted((abs(_size_key(i)[0] - size), ver_gap(i), len(i), i) for i in ids if _size_key(i)[0] > 0)
        same = [i for *_, i in sized if re.match(re.escape(fam) + r"-\d", i.split("/")[1].lower())]
        other = [i for *_, i in sized if i not in same]
        picks = same[:2] + other[:2] if same else other[:3]
    elif _version(short) is not None:  # no size (Qwen3.7-Max): the same family's nearest versions, largest first
        stem, ver = re.match(r"[A-Za-z]+", short).group(0).lower(), _version(short)
        fam = [i for i in ids if i.split("/")[1].lower().startswith(stem) and _version(i) is not None]
        picks = sorted(fam, key=lambda i: (round(abs(_version(i) - ver), 3), -_size_key(i)[0], i))[:n]
    for s in difflib.get_close_matches(short, [i.split("/")[1] for i in ids], n=n, cutoff=0.5):
        full = next(i for i in ids if i.endswith("/" + s))
        if full not in picks:
            picks.append(full)
    return picks[:n]


@lru_cache(maxsize=None)
def architecture_data(model_type: str) -> dict | None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", model_type):  # a config's model_type must not walk the package
        return None
    try:
        return _read("architectures", f"{model_type}.json")
    except FileNotFoundError:
        return None


def architecture_types() -> list[str]:
    return sorted(e.name[:-5] for e in resources.files(_PKG).joinpath("architectures").iterdir() if e.name.endswith(".json"))


@lru_cache(maxsize=None)
def runtime_data(runtime: str) -> dict | None:
    try:
        return _read("runtimes", f"{runtime}.json")
    except FileNotFoundError:
        return None


def runtime_names() -> list[str]:
    return sorted(e.name[:-5] for e in resources.files(_PKG).joinpath("runtimes").iterdir() if e.name.endswith(".json"))
