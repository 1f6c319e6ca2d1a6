"""RG113 on MoE checkpoints, whose headers hold one tensor per expert (36k on a 235B model): the comparison is done
per (layer, module) group, and must still name the one tensor that differs. No torch needed: the folders are
config.json plus sharded, sparse safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from regraft.checks.engine import check
from regraft.checks.rules.model_consistency import header_disagreements
from regraft.inspection.arch import Architecture
from regraft.inspection.resolve import read_model_folder
from regraft.inspection.safetensors_header import TensorInfo, TensorTable
from tests.factories import tiny_config

EXPERTS = 64


def moe_folder(tmp: Path, edit=None, shards: int = 3) -> Path:
    """A tiny Qwen3-MoE folder (2 layers x 64 experts): config.json, sharded headers, index. ``edit(name, shape)``
    returns the shape to write, or None to leave the tensor out."""
    cfg = tiny_config("Qwen/Qwen3-30B-A3B", num_experts=EXPERTS)
    arch = Architecture.for_config(cfg)
    tensors = []
    for m in arch.modules("disk", expand_experts=True):
        if m.tied_to:
            continue
        for name in m.param_names():
            shape = list(m.shape if not name.endswith(".bias") else (m.shape[0],))
            shape = edit(name, shape) if edit else shape
            if shape is not None:
                tensors.append((name, shape))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(cfg))
    wmap = {}
    per = -(-len(tensors) // shards)
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, off = {}, 0
        for name, shape in tensors[s * per:(s + 1) * per]:
            n = 2
            for d in shape:
                n *= d
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
            off += n
            wmap[name] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        with open(tmp / fname, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + off)
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    return tmp


BAD = f"model.layers.1.mlp.experts.{EXPERTS - 27}.down_proj.weight"


def test_clean_moe_headers_agree(tmp_path):
    spec = read_model_folder(moe_folder(tmp_path / "m"))
    assert isinstance(spec.tensors, TensorTable) and len(spec.tensors) > 2 * 3 * EXPERTS
    assert header_disagreements(spec) == ([], [])


def test_one_expert_with_another_shape_is_named(tmp_path):
    def edit(name, shape):
        return [shape[0], shape[1] + 1] if name == BAD else shape

    spec = read_model_folder(moe_folder(tmp_path / "m", edit))
    missing, wrong = header_disagreements(spec)
    assert missing == []
    assert wrong == [f"{BAD} [32, 17] (config implies [32, 16])"]
    rep = check(spec, [spec])
    f = [f for f in rep.targets[0].findings if f.code == "RG113"]
    assert len(f) == 1 and f[0].message == f"1 tensors have other shapes than config.json implies, e.g. {wrong[0]}"


def test_one_missing_expert_is_named(tmp_path):
    spec = read_model_folder(moe_folder(tmp_path / "m", lambda name, shape: None if name == BAD else shape))
    assert header_disagreements(spec) == ([BAD], [])


def test_every_wrong_expert_is_listed_in_order(tmp_path):
    bad = {f"model.layers.{i}.mlp.experts.{e}.gate_proj.weight" for i in (0, 1) for e in (0, 5, EXPERTS - 1)}
    spec = read_model_folder(moe_folder(tmp_path / "m", lambda name, shape: [1, 1] if name in bad else shape))
    missing, wrong = header_disagreements(spec)
    assert missing == [] and [w.split()[0] for w in wrong] == sorted(bad, key=lambda n: (int(n.split(".")[2]),
                                                                                          int(n.split(".")[5])))


def test_tensor_table_is_a_mapping_of_tensor_infos(tmp_path):
    spec = read_model_folder(moe_folder(tmp_path / "m"))
    table = spec.tensors
    t = table["model.layers.0.mlp.experts.3.up_proj.weight"]
    assert isinstance(t, TensorInfo) and t.shape == (16, 32) and t.dtype == "BF16" and t.nbytes == 16 * 32 * 2
    assert t.file.startswith("model-") and "nope" not in table and table.get("nope") is None
    assert set(table) == set(table.keys()) == {n for n, _ in table.items()} and len(table) == len(list(table))
    assert table.total_bytes == sum(x.nbytes for x in table.values())
    assert table.dtypes() == {"BF16"}
    assert spec.describe()["weights"]["bytes"] == table.total_bytes
    assert dict(table) == {n: table[n] for n in table}
