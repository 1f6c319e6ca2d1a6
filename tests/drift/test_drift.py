"""drift: streamed, bounded memory, separates siblings from unrelated checkpoints."""

import json
import tracemalloc
import warnings

import pytest

from regraft.drift import drift
from regraft.report.drift import plot
from tests import factories as T

warnings.filterwarnings("ignore")


def test_verdicts(tiny, tmp_path):
    same = drift(tiny["dense"], tiny["dense"])
    assert same.verdict == "same weights" and same.sigma == 0 and same.total.rel_fro == 0
    sib = drift(tiny["dense"], tiny["sib"])
    assert sib.verdict == "siblings" and 0 < sib.sigma < 0.05 and sib.copy_ok
    other = drift(tiny["dense"], tiny["other"])
    assert other.verdict == "unrelated" and other.sigma > 0.3 and not other.copy_ok
    assert other.relation == "unrelated" and sib.relation == "sibling" and same.relation == "same"


def test_drift_once_reads_a_pair_once_until_its_weights_change(tiny, tmp_path):
    import shutil

    import regraft.drift as D

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny["dense"], a)
    shutil.copytree(tiny["sib"], b)
    first = D.drift_once(a, b)
    assert D.drift_once(a, b) is first  # the same report, not a second pass over both checkpoints
    assert first.sigma == drift(a, b).sigma
    for f in b.glob("*.safetensors"):  # other weights under the same names: measured again
        f.unlink()
    for f in tiny["other"].glob("*.safetensors"):
        shutil.copy(f, b / f.name)
    again = D.drift_once(a, b)
    assert again is not first and again.verdict == "unrelated"


def test_matches_a_direct_computation_in_bf16(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    a = T.load(tiny["dense"]).to(torch.bfloat16)
    a.save_pretrained(tmp_path / "a")
    b = T.load(tiny["sib"]).to(torch.bfloat16)
    b.save_pretrained(tmp_path / "b")
    rep = drift(tmp_path / "a", tmp_path / "b", chunk_elems=1000)
    sa, sb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    k = "model.layers.1.mlp.down_proj.weight"
    x, y = sa[k].double(), sb[k].double()
    m = next(s for s in rep.modules if s.name == k[: -len(".weight")])
    assert abs(m.rel_fro - float((x - y).norm() / x.norm())) < 1e-7
    assert abs(m.sigma - float((x - y).abs().sum() / (x.abs().sum() + y.abs().sum()))) < 1e-7


def test_memory_is_bounded_by_the_chunk_not_the_model(tmp_path):
    """Two sharded checkpoints of ~24 MB each; peak Python/numpy allocation stays near 3 chunks."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("qwen3", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=8192,
                               tie_word_embeddings=False)
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / name, max_shard_size="8MB")
    assert (tmp_path / "a" / "model.safetensors.index.json").is_file()
    chunk = 65536
    tracemalloc.start()
    rep = drift(tmp_path / "a", tmp_path / "b", chunk_elems=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rep.bytes_read > 40e6
    assert peak < 12 * chunk * 4, peak  # a few float32 chunks; the model is ~90x larger
    assert rep.verdict == "unrelated"


def test_plot_png_and_html(tiny, tmp_path):
    rep = drift(tiny["dense"], tiny["sib"])
    png = plot(rep, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = plot(rep, tmp_path / "d.html").read_text()
    assert "<table" in html and "siblings" in html and "q_proj" in html
    assert html.count("<tr>") == len(rep.per_role()) + 2  # header, one row per role, the whole-layer row


def test_plot_draws_roles_across_integer_layers(tiny):
    """One row per module role (experts pooled), columns are the integer layers; not one series per module."""
    rep = drift(tiny["dense"], tiny["sib"])
    per = rep.per_role()
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(per)
    assert all(not r[0].isdigit() and "layers." not in r for r in per)
    assert all(set(d) == {0, 1} for d in per.values())  # both layers of every role
    total = rep.per_layer_total()
    assert list(total) == [0, 1] and all(0 < v < 1 for v in total.values())
    # the pooled value of a role is ||sum of differences|| / ||sum of A||, between its modules' values
    mods = [m for m in rep.modules if m.layer == 0 and m.role == "self_attn.q_proj"]
    assert len(mods) == 1 and abs(per["q_proj"][0] - mods[0].rel_fro) < 1e-12


def test_moe_experts_pool_into_one_row_per_role(tiny):
    from regraft.drift import short_role

    assert short_role("mlp.experts.7.down_proj.weight") == "experts.down_proj"
    assert short_role("self_attn.q_proj.weight") == "q_proj" and short_role("mlp.gate.weight") == "router"
    rep = drift(tiny["moe"], tiny["moe"])
    assert not any("experts.0" in r for r in rep.per_role())


def test_cli(tiny, tmp_path, capsys):
    from regraft.cli.main import main

    assert main(["drift", str(tiny["dense"]), str(tiny["other"]), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "unrelated" and d["per_layer"] and d["per_module"]
    assert main(["drift", str(tiny["dense"]), str(tiny["sib"]), "--plot", str(tmp_path / "p.html")]) == 0
    assert "siblings" in capsys.readouterr().out and (tmp_path / "p.html").is_file()
    assert main(["drift", str(tiny["dense"]), str(tmp_path / "nope")]) == 2
    assert main(["drift", str(tiny["dense"]), str(tiny["sib"]), "--plot", str(tmp_path / "p.svg")]) == 2
