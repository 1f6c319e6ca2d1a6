"""The writers under the SIGKILL loop, with how to judge what a killed run left (see killer.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from tests.hostile.killer import Writer


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _files(d: Path, names) -> dict | None:
    try:
        return {n: _sha(d / n) for n in names}
    except OSError:
        return None


# -- core: write_safetensors --------------------------------------------------------------------------------------
ST_CODE = """
from regraft.inspection.safetensors_header import write_safetensors
data = {f"t{i}": ("F32", (1 << 20,), bytes([i + 1]) * (4 << 20)) for i in range(8)}
write_safetensors(OUT, data, {"format": "pt"})
"""


def safetensors_writer(tmp: Path) -> Writer:
    from regraft.inspection.safetensors_header import write_safetensors

    ref = tmp / "st-ref.safetensors"
    exec(ST_CODE, {"OUT": str(ref)})
    new = _sha(ref)
    old_bytes = tmp / "st-old.safetensors"
    write_safetensors(old_bytes, {"old": ("F32", (4,), b"\0" * 16)})
    old = _sha(old_bytes)

    def judge(out: Path) -> str:
        if not out.exists():
            return "corrupt: the old file is gone and no new one is there"
        h = _sha(out)
        return "old" if h == old else "new" if h == new else f"corrupt: {out.stat().st_size} bytes, neither old nor new"

    return Writer("write_safetensors (core atomic writer)",
                  spec=lambda out: {"preload": ["regraft.inspection.safetensors_header"],
                                    "code": f"OUT = {str(out)!r}\n" + ST_CODE},
                  prepare=lambda out: shutil.copyfile(old_bytes, out), judge=judge)


# -- bundled example materialisation ------------------------------------------------------------------------------
def example_writer(tmp: Path) -> Writer:
    from regraft import examples

    os.environ["REGRAFT_CACHE"], saved = str(tmp / "ex-ref"), os.environ.get("REGRAFT_CACHE")
    try:
        ref = examples.materialise("qwen3-30b-a3b-attn")
    finally:
        os.environ.pop("REGRAFT_CACHE") if saved is None else os.environ.__setitem__("REGRAFT_CACHE", saved)
    names = ("adapter_config.json", "adapter_model.safetensors")
    expected = _files(ref, names)

    def finals(out: Path):
        root = out / "examples"
        return [p for p in root.iterdir() if ".tmp-" not in p.name] if root.is_dir() else []

    def judge(out: Path) -> str:
        got = finals(out)
        if not got:
            return "old"
        if len(got) == 1 and _files(got[0], names) == expected:
            return "new"
        return f"corrupt: {[p.name for p in got]} holds {_files(got[0], names) if got else None}"

    def after(out: Path) -> str:
        code = ("import os; os.environ['REGRAFT_CACHE'] = OUT\nfrom regraft.examples import materialise\n"
                "materialise('qwen3-30b-a3b-attn')\n")
        import subprocess

        subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + code], check=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        return "" if judge(out) == "new" else f"after a re-run: {judge(out)}"

    return Writer("examples.materialise (bundled adapter into the cache)",
                  spec=lambda out: {"preload": ["regraft.examples", "regraft.inspection.safetensors_header"],
                                    "code": "from regraft.examples import materialise\n"
                                            "materialise('qwen3-30b-a3b-attn')\n"},
                  prepare=lambda out: out.mkdir(parents=True, exist_ok=True), judge=judge,
                  env=lambda out: {"REGRAFT_CACHE": str(out)}, after=after)


# -- port lora (PEFT folder, GGUF file) and port config ------------------------------------------------------------
PORT_PRELOAD = ["torch", "safetensors.torch", "regraft.cli.main", "regraft.cli.cmd_port", "regraft.cli.port_lora",
                "regraft.port.api", "regraft.port.write", "regraft.inspection.resolve"]


def _cli(argv):
    from regraft.cli.main import main

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"{argv}: exit {code}: {err.getvalue()[-500:]}")


def port_lora_writer(tmp: Path, world: dict) -> Writer:
    names = ("adapter_config.json", "adapter_model.safetensors")
    old_dir, new_dir = tmp / "pl-old", tmp / "pl-new"
    _cli(["port", "lora", world["lora"], "--to", world["sib"], "--out", old_dir, "--no-drift"])
    argv = ["port", "lora", world["lora"], "--to", world["sib"], "--runtime", "vllm", "--no-drift", "--force"]
    _cli(argv + ["--out", new_dir])
    old, new = _files(old_dir, names), _files(new_dir, names)
    assert old != new

    def judge(out: Path) -> str:
        if not out.exists():
            return "corrupt: the old output is gone and no new one is there"
        got = _files(out, names)
        if (out / "regraft_port.json").exists():
            try:
                json.loads((out / "regraft_port.json").read_text())
            except ValueError:
                return "corrupt: regraft_port.json is not valid JSON"
        return "old" if got == old else "new" if got == new else f"corrupt: files {got}"

    return Writer("port lora --force (PEFT adapter folder over an older port)",
                  spec=lambda out: {"preload": PORT_PRELOAD, "argv": [str(a) for a in argv + ["--out", out]]},
                  prepare=lambda out: shutil.copytree(old_dir, out), judge=judge)


def port_gguf_writer(tmp: Path, world: dict) -> Writer:
    old_f, new_f = tmp / "old.gguf", tmp / "new.gguf"
    argv = ["port", "lora", world["v4"], "--to", world["moe"], "--runtime", "llama.cpp", "--no-drift", "--force"]
    _cli(argv + ["--out", new_f])
    old_f.write_bytes(b"GGUF" + b"\0" * 60)  # an older file at the output path
    new = _sha(new_f)

    def judge(out: Path) -> str:
        if not out.exists():
            return "corrupt: the old file is gone and no new one is there"
        side = out.with_name(out.name + ".regraft.json")
        if side.exists():
            try:
                json.loads(side.read_text())
            except ValueError:
                return "corrupt: the .regraft.json report next to the GGUF is not valid JSON"
        h = _sha(out)
        return "old" if out.read_bytes() == old_f.read_bytes() else "new" if h == new else "corrupt: GGUF bytes"

    return Writer("port lora --runtime llama.cpp --force (GGUF over an older file)",
                  spec=lambda out: {"preload": PORT_PRELOAD + ["gguf", "regraft.port.gguf_writer"],
                                    "argv": [str(a) for a in argv + ["--out", out]]},
                  prepare=lambda out: shutil.copyfile(old_f, out), judge=judge)


def port_config_writer(tmp: Path, world: dict) -> Writer:
    new_f = tmp / "new.yaml"
    argv = ["port", "config", world["vllm"], "--to", world["moe"], "--force"]
    _cli(argv + ["--out", new_f])
    old_text = "# an older port\nmax-model-len: 1024\n"

    def judge(out: Path) -> str:
        if not out.exists():
            return "corrupt: the old file is gone and no new one is there"
        b = out.read_bytes()
        return "old" if b == old_text.encode() else "new" if b == new_f.read_bytes() else "corrupt: bytes"

    return Writer("port config --force (serving config over an older one)",
                  spec=lambda out: {"preload": ["yaml", "regraft.cli.main", "regraft.cli.cmd_port",
                                                "regraft.cli.port_config", "regraft.configs.readers",
                                                "regraft.inspection.resolve"],
                                    "argv": [str(a) for a in argv + ["--out", out]]},
                  prepare=lambda out: out.write_text(old_text), judge=judge)


# -- regraft index (LanceDB store) --------------------------------------------------------------------------------
def index_writer(tmp: Path, n_docs: int = 40) -> Writer:
    docs = tmp / "kill-docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        (docs / f"d{i:03d}.md").write_text(f"# Note {i}\n\n" + "\n\n".join(
            f"Paragraph {j} of note {i}: LoRA adapter port qwen tokens {i * 31 + j}." for j in range(12)))
    argv = ["index", docs, "--embedder", "hashing-64", "--batch-size", "4", "--max-tokens", "32", "--no-progress",
            "--format", "json"]
    ref = tmp / "kill-store-ref"
    _cli(argv + ["--store", ref])
    full = _rows(ref)
    assert full, "the reference index is empty"

    def judge(out: Path) -> str:
        try:
            rows = _rows(out)
        except _NoStore:
            return "old"
        except Exception as e:  # noqa: BLE001
            return f"corrupt: the store does not open or read ({type(e).__name__}: {str(e)[:150]})"
        bad = {k for k, v in rows.items() if full.get(k) != v}
        if bad:
            return f"corrupt: {len(bad)} rows differ from the reference"
        return "new" if set(rows) == set(full) else "partial"

    def after(out: Path) -> str:
        try:
            _cli(argv + ["--store", out])
        except Exception as e:  # noqa: BLE001
            return f"the re-run failed: {str(e)[:200]}"
        v = judge(out)
        return "" if v == "new" else v

    return Writer("regraft index (LanceDB store, batch commits)",
                  spec=lambda out: {"preload": ["lancedb", "pyarrow", "regraft.cli.main", "regraft.cli.cmd_index",
                                                "regraft.hybrid.index", "regraft.hybrid.store"],
                                    "argv": [str(a) for a in argv + ["--store", out]]},
                  prepare=lambda out: None, judge=judge, after=after)


class _NoStore(Exception):
    pass


def _rows(store_dir: Path) -> dict:
    from regraft.hybrid.store import StoreMissingError, open_store

    if not Path(store_dir).exists():
        raise _NoStore()
    try:
        s = open_store(str(store_dir))
    except StoreMissingError:
        raise _NoStore() from None
    tbl = s._tbl()
    if tbl is None:
        return {}
    data = tbl.to_arrow().to_pylist()
    s.close()
    out = {}
    for r in data:
        out.setdefault(r["id"], (r["path"], r["text"], tuple(round(x, 5) for x in r["vector"])))
    if len(data) != len(out):  # duplicate chunk ids: shows up as a row that differs from the reference
        out["__duplicates__"] = len(data) - len(out)
    return out


# -- port's writers, called directly with large tensors (so that kills land while they write) ----------------------
PEFT_CODE = """
import torch
from regraft.port.write import write_peft
g = torch.Generator().manual_seed(0)
tensors = {f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight": torch.randn(64, 16384, generator=g)
           for i in range(16)}
write_peft(OUT, {"peft_type": "LORA", "r": 64, "lora_alpha": 128}, tensors, {"regraft": "kill test"})
"""
GGUF_CODE = """
import torch
from regraft.port.gguf_writer import write_gguf
from regraft.port.items import Item
g = torch.Generator().manual_seed(0)
items = []
for i in range(16):
    it = Item(f"model.layers.{i}.self_attn.q_proj", "lora", layer=i)
    it.a, it.b = torch.randn(64, 8192, generator=g), torch.randn(8192, 64, generator=g)
    items.append(it)
write_gguf(OUT, items, "qwen3", 16, None, 128.0, name="kill test")
"""


def _code_writer(tmp: Path, name: str, code: str, preload: list[str], is_dir: bool) -> Writer:
    import subprocess

    ref = tmp / f"{name}-ref"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", f"from pathlib import Path\nOUT = Path({str(ref)!r})\n" + code], check=True,
                   env=env)
    old_dir = tmp / f"{name}-old"
    if is_dir:
        old_dir.mkdir()
        (old_dir / "adapter_config.json").write_text('{"old": true}')
        (old_dir / "adapter_model.safetensors").write_bytes(b"old")
        names = ("adapter_config.json", "adapter_model.safetensors")
        new, old = _files(ref, names), _files(old_dir, names)
    else:
        old_dir.write_bytes(b"GGUF-old")
        new, old = _sha(ref), _sha(old_dir)

    def judge(out: Path) -> str:
        if not out.exists():
            return "corrupt: the old output is gone and no new one is there"
        got = _files(out, names) if is_dir else _sha(out)
        return "old" if got == old else "new" if got == new else f"corrupt: {got}"

    def prepare(out: Path) -> None:
        (shutil.copytree if is_dir else shutil.copyfile)(old_dir, out)

    return Writer(name, spec=lambda out: {"preload": preload, "code": f"from pathlib import Path\nOUT = Path({str(out)!r})\n"
                                                                    + code},
                  prepare=prepare, judge=judge)


def peft_folder_writer(tmp: Path) -> Writer:
    return _code_writer(tmp, "port write_peft (64 MB adapter folder over an older one)", PEFT_CODE,
                        ["torch", "safetensors.torch", "regraft.port.write"], True)


def gguf_file_writer(tmp: Path) -> Writer:
    return _code_writer(tmp, "port write_gguf (64 MB GGUF over an older file)", GGUF_CODE,
                        ["torch", "numpy", "gguf", "regraft.port.gguf_writer", "regraft.port.items"], False)


STAGED_DIR_CODE = """
from regraft import outputs
with outputs.staged(OUT, [], force=True, kind="dir") as st:
    (st.path / "adapter_config.json").write_text('{"new": true}')
    (st.path / "adapter_model.safetensors").write_bytes(b"new" * 1000)
"""


def staged_dir_writer(tmp: Path) -> Writer:
    """The commit every folder writer goes through (regraft.outputs.staged), without torch: cheap to kill often."""
    return _code_writer(tmp, "outputs.staged (folder over an older one)", STAGED_DIR_CODE, ["regraft.outputs"], True)
