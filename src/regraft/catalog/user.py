"""The user's own catalog: config.json files (and optional safetensors indexes) added with `regraft catalog add`.

Stored offline under ``$REGRAFT_CATALOG_DIR`` (default ``$REGRAFT_CACHE_DIR/catalog`` or ``~/.cache/regraft/catalog``),
one folder per model id (``<org>__<name>/``) holding the config.json bytes as given, the index if any, and
``entry.json`` (where it came from, when, its SHA-256). A MODEL name is looked up here after local folders and the
Hugging Face cache, and before the built-in catalog; the entry's status is ``user`` and its source the added path.
Nothing is ever filled in: the config is the user's file, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from regraft.errors import InputError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
INDEX = "model.safetensors.index.json"


def user_dir() -> Path:
    env = os.environ.get("REGRAFT_CATALOG_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("REGRAFT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "regraft")
    return Path(base) / "catalog"


def _folder(model_id: str) -> Path:
    return user_dir() / model_id.replace("/", "__", 1)


def user_ids() -> dict[str, Path]:
    """Model id -> entry folder, for every complete user entry."""
    root = user_dir()
    if not root.is_dir():
        return {}
    out = {}
    for d in sorted(root.iterdir()):
        if "__" in d.name and (d / "entry.json").is_file() and (d / "config.json").is_file():
            out[d.name.replace("__", "/", 1)] = d
    return out


def find(name: str) -> str | None:
    """The user-catalog id for ``name`` (case-insensitive, with or without the org), or None."""
    ids = user_ids()
    if not ids:
        return None
    low = name.lower()
    for mid in ids:
        if mid.lower() == low or mid.split("/", 1)[1].lower() == low:
            return mid
    return None


def entry(model_id: str) -> tuple[dict, dict, dict | None]:
    """(config, metadata, safetensors index or None) of a user entry."""
    from regraft.inspection.files import read_json, read_json_if_exists

    d = user_ids()[model_id]
    return read_json(d / "config.json"), read_json(d / "entry.json"), read_json_if_exists(d / INDEX)


def add(path: str | Path, name: str | None = None, force: bool = False) -> dict:
    """Store a config.json (a file, or a model folder's config.json and safetensors index) as ``name``.

    The id is ``name``, else the config's ``_name_or_path`` when it is an org/name id, else ``local/<folder>``.
    Refused: a file that is not a JSON object with a model_type, an invalid config, an id that is not org/name,
    an id already in the user catalog (without ``force``) or a complete built-in entry (its source is verified;
    pass your folder directly instead). Returns the stored metadata.
    """
    from regraft import catalog
    from regraft.inspection.arch import validate_config
    from regraft.inspection.files import read_json, read_json_if_exists

    src = Path(path).expanduser()
    if src.is_dir():
        cfg_path, index_path = src / "config.json", src / INDEX
        if not cfg_path.is_file():
            raise InputError(f"'{src}' has no config.json; expected a model folder or a config.json file.")
    elif src.is_file():
        cfg_path, index_path = src, src.parent / INDEX if src.name == "config.json" else None
    else:
        raise InputError(f"Cannot add '{src}': no such file or folder; expected a config.json or a model folder.")
    raw = cfg_path.read_bytes()
    config = read_json(cfg_path, "config.json")
    if not isinstance(config.get("model_type"), str):
        raise InputError(f"'{cfg_path}' has no model_type; expected a Hugging Face config.json (with model_type).")
    validate_config(config, f"'{cfg_path}'")
    index = read_json_if_exists(index_path, INDEX) if index_path is not None else None
    if index is not None and not isinstance(index.get("weight_map"), dict):
        raise InputError(f"'{index_path}' has no weight_map object; expected a safetensors index.")
    guess = config.get("_name_or_path")
    model_id = name or (guess if isinstance(guess, str) and _ID.match(guess) else f"local/{src.resolve().name if src.is_dir() else src.resolve().parent.name}")
    if not _ID.match(model_id):
        raise InputError(f"'{model_id}' is not a model id; expected ORG/NAME (letters, digits, '.', '_', '-'), "
                         "e.g. --name me/my-model.")
    builtin = catalog.find_model(model_id)
    if builtin and catalog.model_entry(builtin)["_status"] != "partial":
        raise InputError(f"'{builtin}' is a complete built-in catalog entry ({catalog.model_entry(builtin)['_status']}); "
                         "pass your folder to check directly, or add it under another --name.")
    dest = _folder(model_id)
    if dest.exists() and not force:
        raise InputError(f"'{model_id}' is already in the user catalog ({dest}); use --force to replace it, or "
                         "`regraft catalog remove` it first.")
    meta = {"_model": model_id, "_status": "user", "_source": str(cfg_path.resolve()),
            "_added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "_sha256": hashlib.sha256(raw).hexdigest(), "_bytes": len(raw),
            "_index": (str(index_path.resolve()) if index is not None else None)}
    if builtin:
        meta["_notes"] = [f"Replaces the partial built-in entry {builtin} while present."]
    user_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".add-", dir=user_dir()))
    try:
        (tmp / "config.json").write_bytes(raw)
        if index is not None:
            (tmp / INDEX).write_bytes(index_path.read_bytes())
        (tmp / "entry.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def remove(name: str) -> str:
    mid = find(name)
    if mid is None:
        ids = ", ".join(user_ids()) or "none"
        raise InputError(f"'{name}' is not in the user catalog ({user_dir()}); entries: {ids}.")
    shutil.rmtree(user_ids()[mid])
    return mid
