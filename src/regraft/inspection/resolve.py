"""Turn what the user typed into a ModelSpec, in this order:

1. a local Hugging Face model folder (config.json, generation_config.json, tokenizer_config.json /
   chat_template.jinja, safetensors headers and index);
2. a repo id in the local Hugging Face cache;
3. the user's catalog (`regraft catalog add`: config.json files stored offline, status ``user``);
4. the built-in catalog (config-only, with each entry's source and status);
5. the Hub, when reachable (config and safetensors headers only, never weights).

A name that resolves to nothing is an UnknownModelError naming the nearest real models; a name known not to
exist (Qwen3-70B) says so, with the evidence.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from regraft import catalog
from regraft.catalog import user as user_catalog
from regraft.errors import InputError, OfflineError, UnknownModelError
from regraft.inspection import hub
from regraft.inspection.arch import validate_config
from regraft.inspection.files import inside, read_json, read_json_if_exists, read_text
from regraft.inspection.model import ModelSpec
from regraft.inspection.safetensors_header import read_folder_tensors


def resolve_model(name: str | Path, *, use_hub: bool = True) -> ModelSpec:
    """Resolve a folder, cached repo id, catalog id or Hub id to a ModelSpec (metadata only)."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return read_model_folder(path)
    if path.exists():
        raise InputError(f"'{text}' is a file; expected a model folder (with config.json), a Hugging Face repo id "
                         "or a catalog name (see `regraft catalog list`).")
    repo_id, _, revision = text.partition("@")
    snap = hub.cached_snapshot(repo_id, revision or None)
    if snap is not None:
        return read_model_folder(snap, name=repo_id, origin="hf-cache")
    uid = user_catalog.find(repo_id)
    if uid is not None:
        return user_model(uid)
    cid = catalog.find_model(repo_id)
    if cid is not None:
        return catalog_model(cid)
    _raise_if_known_fake(repo_id)
    looks_local = text.startswith((".", "/", "~")) or (text.count("/") != 1)
    if use_hub and not hub.offline() and not looks_local:
        try:
            return hub_model(repo_id, revision or "main")
        except OfflineError as e:
            raise UnknownModelError(_unknown_message(repo_id, f"It is not in the catalog and {e}")) from None
    reason = ("No such folder." if looks_local else
              "It is not a local folder, not in the Hugging Face cache, not in the built-in catalog"
              + (", and the Hub is off (HF_HUB_OFFLINE)." if hub.offline() else "."))
    raise UnknownModelError(_unknown_message(repo_id, reason))


@lru_cache(maxsize=1)
def _fakes() -> dict:
    return json.loads(resources.files("regraft.catalog").joinpath("nonexistent.json").read_text())


def _raise_if_known_fake(repo_id: str) -> None:
    fakes = _fakes()
    full = repo_id if "/" in repo_id else f"Qwen/{repo_id}"
    for fake, why in fakes["names"].items():
        if fake.lower() == full.lower():
            raise UnknownModelError(_unknown_message(repo_id, f"'{fake}' does not exist: {why}. "
                                                     f"Source: {fakes['_source']}."))
    import re

    for pattern, entry in fakes.get("patterns", {}).items():
        if re.match(pattern, full, re.I):
            raise UnknownModelError(_unknown_message(repo_id, f"'{full}' does not exist as open weights: "
                                                     f"{entry['why']}. Source: {entry['_source']}."))


def _unknown_message(repo_id: str, reason: str) -> str:
    near = catalog.nearest_models(repo_id)
    hint = f" Nearest real models: {', '.join(near)}." if near else ""
    return f"Unknown model '{repo_id}'. {reason}{hint} See `regraft catalog list` for all built-in models."


def _strip_meta(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def catalog_model(model_id: str) -> ModelSpec:
    entry = catalog.model_entry(model_id)
    meta = {k: v for k, v in entry.items() if k.startswith("_")}
    return ModelSpec(name=model_id, origin="catalog", config=_strip_meta(entry), status=entry["_status"],
                     meta=meta, generation_config=entry.get("_generation_config"))


def user_model(model_id: str) -> ModelSpec:
    config, meta, _index = user_catalog.entry(model_id)
    validate_config(config, f"'{meta.get('_source')}' (user catalog entry {model_id})")
    return ModelSpec(name=model_id, origin="user-catalog", config=config, status="user", meta=meta)


def read_model_folder(folder: Path, name: str | None = None, origin: str = "local") -> ModelSpec:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        if (folder / "adapter_config.json").is_file():
            raise InputError(f"'{folder}' is a PEFT adapter folder, not a model. Pass it with --adapter, and give "
                             "the model it should go on as SOURCE/TARGET.")
        raise InputError(f"'{folder}' has no config.json; expected a Hugging Face model folder (config.json and "
                         "*.safetensors), a repo id or a catalog name.")
    config = read_json(inside(folder, "config.json"))
    validate_config(config, f"'{cfg_path}'")
    gen = read_json_if_exists(inside(folder, "generation_config.json"))
    tok = read_json_if_exists(inside(folder, "tokenizer_config.json"))
    template = _chat_template(folder, tok)
    found = read_folder_tensors(folder, "model.safetensors.index.json", "model.safetensors")
    tensors, nbytes = found if found else (None, 0)
    return ModelSpec(name=name or str(folder), origin=origin, config=config, status=origin, path=folder,
                     generation_config=gen, tokenizer_config=tok, chat_template=template, tensors=tensors,
                     bytes_read=nbytes)


def _chat_template(folder: Path, tok: dict | None) -> str | None:
    jinja = inside(folder, "chat_template.jinja")
    if jinja.is_file():
        return read_text(jinja, "chat template")
    cj = read_json_if_exists(inside(folder, "chat_template.json"))
    if cj and isinstance(cj.get("chat_template"), str):
        return cj["chat_template"]
    if tok:
        t = tok.get("chat_template")
        if isinstance(t, str):
            return t
        if isinstance(t, list):  # [{"name": "default", "template": ...}, ...]
            for item in t:
                if isinstance(item, dict) and item.get("name") == "default":
                    return item.get("template")
    return None


def hub_model(repo_id: str, revision: str = "main") -> ModelSpec:
    from regraft.inspection.safetensors_header import parse_header_doc

    config = hub.fetch_config(repo_id, revision)
    validate_config(config, f"config.json of '{repo_id}'")
    gen = hub.fetch_json(repo_id, "generation_config.json", revision)
    tok = hub.fetch_json(repo_id, "tokenizer_config.json", revision)
    tensors, nbytes = {}, 0
    index = hub.fetch_json(repo_id, "model.safetensors.index.json", revision)
    files = sorted(set(index["weight_map"].values())) if index and isinstance(index.get("weight_map"), dict) \
        else ["model.safetensors"]
    for f in files:
        got = hub.fetch_header(repo_id, f, revision)
        if got:
            doc, n = got
            tensors.update(parse_header_doc(doc, f, None, f"'{f}' of {repo_id}"))
            nbytes += n
    template = tok.get("chat_template") if tok and isinstance(tok.get("chat_template"), str) else None
    return ModelSpec(name=repo_id, origin="hub", config=config, status="hub", generation_config=gen,
                     tokenizer_config=tok, chat_template=template, tensors=tensors or None, bytes_read=nbytes)
