"""weights_evidence: the coupling statistic decides when the numbers separate the readings, says unknown when
they do not, and only runs (and imports torch) with a local base."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from regraft.checks.weights_evidence import MARGIN, coupling_contrast, expert_deltas, judge, layer_scores  # noqa: E402


def _coupled(E=4, H=32, I=16, r=4, seed=0, strength=1.0):
    """gate_up pairs whose output side follows each expert's own W_down^T W_down (what a gradient step writes)."""
    g = torch.Generator().manual_seed(seed)
    downs = [torch.randn(H, I, generator=g) for _ in range(E)]
    a = torch.randn(E, r, H, generator=g)
    bs = []
    for e in range(E):
        m = downs[e].T @ downs[e]  # I x I
        z = torch.randn(2 * I, r, generator=g)
        z[:I] = (torch.eye(I) + strength * m / m.trace() * I) @ z[:I]
        z[I:] = (torch.eye(I) + strength * m / m.trace() * I) @ z[I:]
        bs.append(z)
    b = torch.stack(bs, dim=-1).reshape(2 * I, r * E)  # interleaved: column k*E+e
    return a.reshape(E * r, H), b, downs


def test_contrast_is_one_without_coupling():
    g = torch.Generator().manual_seed(1)
    downs = [torch.randn(32, 16, generator=g) for _ in range(4)]
    deltas = [torch.randn(32, 32, generator=g) for _ in range(4)]
    assert abs(coupling_contrast(deltas, downs) - 1.0) < 0.15


def test_coupled_pairs_decide_orientation_and_order():
    a, b, downs = _coupled()
    s = layer_scores([(a, b)], [downs], 4)
    assert judge(s["orientation"])[0] == "linear", s
    assert judge(s["b-order"])[0] == "interleaved", s
    # the same numbers stored block-wise: the block reading is the one that pairs them
    r = a.shape[0] // 4
    b_blk = b.reshape(b.shape[0], r, 4).permute(0, 2, 1).reshape(b.shape[0], 4 * r)
    s = layer_scores([(a, b_blk)], [downs], 4)
    assert judge(s["b-order"])[0] == "block", s


def test_weak_coupling_is_unknown():
    a, b, downs = _coupled(strength=0.02)
    s = layer_scores([(a, b)], [downs], 4)
    assert judge(s["orientation"]) [0] is None and judge(s["b-order"])[0] is None, s


def test_transposed_reading_is_the_transpose():
    a, b, _ = _coupled()
    d, dt = expert_deltas(a, b, 4), expert_deltas(a, b, 4, transpose=True)
    assert all(torch.equal(x.T, y) for x, y in zip(d, dt))


def test_judge_margin():
    assert judge({"x": 1.0 + MARGIN + 0.01, "y": 1.0}) == ("x", pytest.approx(MARGIN + 0.01))
    assert judge({"x": 1.0 + MARGIN / 2, "y": 1.0})[0] is None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("peft")
    from tests.layouts._world import moe_world

    return moe_world(tmp_path_factory.mktemp("evidence"))


def test_check_with_local_base_measures_and_says_unknown_for_random_adapter(world, tmp_path):
    """A random (untrained) gate_up-only adapter without peft_version on the blind tiny MoE: files undecided, the
    numbers measured and found not to separate: RG305 + RG307 unknown, never a guess."""
    from regraft.checks.engine import check
    from regraft.inspection.adapter import read_adapter
    from regraft.inspection.resolve import resolve_model
    from tests.layouts._world import read_adapter_files, save_adapter

    t, cfg = read_adapter_files(world["fused"])
    gu = {k: v for k, v in t.items() if "base_layer" in k}
    cfg = {k: v for k, v in cfg.items() if k != "peft_version"}
    ad = read_adapter(save_adapter(tmp_path / "gu", gu, {**cfg, "target_parameters": ["mlp.experts.gate_up_proj"]}))
    base = resolve_model(str(world["moe"]))
    rep = check(base, [base], ad, "peft", select=["RG30"])
    f = {x.code: x for x in rep.targets[0].findings}
    assert f["RG307"].verdict.value == "unknown" and "do not separate" in f["RG307"].message
    assert f["RG305"].verdict.value == "unknown" and "numbers did not separate" in f["RG305"].message
    assert rep.targets[0].verdict.value == "unknown"
    assert set(f["RG307"].data["contrast"]) == {"linear", "positional"}


def test_check_without_local_base_never_imports_torch(tmp_path):
    """python -X importtime on `regraft check` with a catalog (non-local) base: no torch, no numpy."""
    from tests.layouts._adapters import fused, peft_cfg, write

    ad = write(tmp_path / "ad", peft_cfg(), fused(H=2048, I=768, E=128, r=1, down=False))
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "regraft", "check", "Qwen/Qwen3-30B-A3B",
                          "Qwen/Qwen3-30B-A3B", "--adapter", str(ad), "--format", "json"],
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "numpy" not in imported
    assert '"RG304"' in out.stdout
