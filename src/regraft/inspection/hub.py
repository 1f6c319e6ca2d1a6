"""The Hugging Face cache and Hub: config and safetensors headers only, never weights.

The local cache layout is huggingface_hub's: ``$HF_HUB_CACHE`` (or ``$HF_HOME/hub``, or ``~/.cache/huggingface/hub``)
``/models--ORG--NAME/refs/main`` holds a revision and ``snapshots/<revision>/`` holds the files.

Remote access uses plain HTTP with Range requests (8 bytes, then the header) so ``check`` never downloads a weight.
It is off when ``HF_HUB_OFFLINE=1`` or ``REGRAFT_OFFLINE=1``; an unreachable Hub gives an OfflineError.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from regraft.errors import FileFormatError, OfflineError, UnknownModelError

TIMEOUT = float(os.environ.get("REGRAFT_HUB_TIMEOUT", "5"))


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot folder of ``repo_id`` in the HF cache, if it has a config.json."""
    if repo_id.count("/") != 1:
        return None
    root = cache_dir() / ("models--" + repo_id.replace("/", "--"))
    if not root.is_dir():
        return None
    rev = revision or "main"
    ref = root / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snap = root / "snapshots" / commit
    if (snap / "config.json").is_file():
        return snap
    snaps = sorted((p for p in (root / "snapshots").glob("*") if (p / "config.json").is_file()),
                   key=lambda p: p.stat().st_mtime) if (root / "snapshots").is_dir() else []
    return snaps[-1] if snaps and revision is None else None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("REGRAFT_OFFLINE") == "1"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _get(url: str, headers: dict | None = None) -> bytes | None:
    """GET a URL; None on 404; OfflineError when the Hub cannot be reached."""
    import urllib.error  # lazy: only the Hub path pays for http.client
    import urllib.request
    req = urllib.request.Request(url, headers={"User-Agent": "regraft", **(headers or {})})
    token = os.environ.get("HF_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403, 404):
            return None
        raise OfflineError(f"The Hugging Face Hub answered HTTP {e.code} for {url}. Try again later, or pass a "
                           "local model folder.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(f"Cannot reach the Hugging Face Hub at {endpoint()} ({reason}). regraft works offline "
                           "with local folders, the HF cache and its built-in catalog; set HF_HUB_OFFLINE=1 to skip "
                           "the Hub.") from None


def fetch_config(repo_id: str, revision: str = "main") -> dict:
    """config.json of a Hub repo; UnknownModelError on 404."""
    raw = _get(f"{endpoint()}/{repo_id}/resolve/{revision}/config.json")
    if raw is None:
        raise UnknownModelError(f"'{repo_id}' was not found on the Hugging Face Hub (or is gated).")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        raise FileFormatError(f"config.json of '{repo_id}' on the Hub is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"config.json of '{repo_id}' on the Hub is not a JSON object.")
    return doc


def fetch_json(repo_id: str, filename: str, revision: str = "main") -> dict | None:
    raw = _get(f"{endpoint()}/{repo_id}/resolve/{revision}/{filename}")
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def fetch_header(repo_id: str, filename: str, revision: str = "main") -> tuple[dict, int] | None:
    """The JSON header of a remote safetensors file via two Range requests; (header, bytes_read)."""
    url = f"{endpoint()}/{repo_id}/resolve/{revision}/{filename}"
    first = _get(url, {"Range": "bytes=0-7"})
    if first is None or len(first) < 8:
        return None
    (n,) = struct.unpack("<Q", first[:8])
    if n > 100_000_000:
        raise FileFormatError(f"{filename} of '{repo_id}' declares a {n}-byte header, over the 100000000 limit.")
    raw = _get(url, {"Range": f"bytes=8-{7 + n}"})
    if raw is None or len(raw) != n:
        raise FileFormatError(f"{filename} of '{repo_id}': the Hub returned a short header.")
    return json.loads(raw), 8 + n
