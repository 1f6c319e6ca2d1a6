"""Golden cases for RG304-RG307 (and RG322, experts never adapted) through `check` (metadata only, tiny configs, header-only adapters: no torch)."""

from __future__ import annotations

import pytest

from regraft.checks.engine import check
from regraft.inspection.adapter import read_adapter
from regraft.inspection.resolve import resolve_model
from tests.layouts._adapters import MOE_CFG, P, attn, fused, model_dir, peft_cfg, write

WIDE = dict(MOE_CFG, hidden_size=64, head_dim=16)  # 2*I != H: the shapes decide the orientation


def _run(tmp_path, cfg, shapes, model=MOE_CFG, runtime="peft", readme=None, files=None):
    base = resolve_model(model_dir(tmp_path / "base", model))
    ad = read_adapter(write(tmp_path / "ad", cfg, shapes, readme=readme, extra_files=files))
    rep = check(base, [base], ad, runtime, select=["RG30", "RG322"])
    t = rep.targets[0]
    return t.areas["lora"].verdict.value, [(f.code, f.severity.value, f.verdict.value if f.verdict else "-",
                                           f.message) for f in t.findings]


GOLDEN = [  # id, config, shapes, model, runtime, readme, files, verdict, [(code, severity, verdict, substring)]
    ("RG304-peft-linear", peft_cfg(peft_version="0.21.2"), fused(), MOE_CFG, "peft", None, None, "loads",
     [("RG304", "info", "-", "producer peft, layout peft-3d-linear"),
      ("RG306", "info", "-", "peft-3d-linear on peft >=0.19: loads")]),
    ("RG305-blind-gate-up-only", peft_cfg(), fused(down=False), MOE_CFG, "peft", None, None, "unknown",
     [("RG304", "info", "-", "layout unknown"),
      ("RG305", "warning", "unknown", "between peft-3d-linear, peft-3d-positional")]),
    ("RG305-unsloth-block-or-interleaved", peft_cfg(), fused(), MOE_CFG, "vllm", "tags: [unsloth]", None, "unknown",
     [("RG305", "warning", "unknown", "unsloth-3d-blockwise")]),
    ("RG306-positional-on-vllm", peft_cfg(peft_version="0.18.1"), fused(H=64, orientation="positional"), WIDE,
     "vllm", None, None, "needs-relayout",
     [("RG304", "info", "-", "layout peft-3d-positional"),
      ("RG306", "error", "needs-relayout", "The size of tensor a (512)")]),
    ("RG306-positional-on-peft", peft_cfg(), fused(H=64, orientation="positional"), WIDE, "peft", None, None,
     "needs-relayout", [("RG306", "error", "needs-relayout", "peft-3d-positional on peft >=0.19: errors"),
                        ("RG306", "info", "-", "[older version]")]),
    ("RG306-megatron-on-vllm", peft_cfg(), {f"{P}.0.mlp.experts.gate_up_proj.lora_A.weight": (4, 2, 32),
                                            f"{P}.0.mlp.experts.gate_up_proj.lora_B.weight": (4, 32, 2)}, MOE_CFG,
     "vllm", None, None, "needs-relayout", [("RG306", "error", "needs-relayout", "SkyRL#1852")]),
    ("RG306-nemo-grouped", peft_cfg(), {f"{P}.0.mlp.experts.lora_gate_and_up_A": (4, 32, 2)}, MOE_CFG,
     "vllm", None, None, "needs-relayout", [("RG306", "error", "needs-relayout", "nemo-automodel-grouped on vllm")]),
]


@pytest.mark.parametrize("case", GOLDEN, ids=[c[0] for c in GOLDEN])
def test_golden(tmp_path, case):
    _, cfg, shapes, model, runtime, readme, files, verdict, expected = case
    got_verdict, findings = _run(tmp_path, cfg, shapes, model, runtime, readme, files)
    for code, sev, v, text in expected:
        assert any(f[0] == code and f[1] == sev and f[2] == v and text in f[3] for f in findings), \
            f"missing {code} {sev} {v} '{text}' in:\n" + "\n".join(map(str, findings))
    assert verdict == "*" or got_verdict == verdict, findings


def test_rg322_silent_for_attention_only(tmp_path):
    _, findings = _run(tmp_path, peft_cfg(target_modules=["q_proj"]), attn())
    assert not any(f[0] == "RG322" for f in findings)


def test_rg101_not_fired_for_positional_orientation(tmp_path):
    """A PEFT 0.18 fused adapter is a relayout (RG306), not a port across shapes (RG101)."""
    base = resolve_model(model_dir(tmp_path / "base", WIDE))
    ad = read_adapter(write(tmp_path / "ad", peft_cfg(peft_version="0.18.1"), fused(H=64, orientation="positional")))
    rep = check(base, [base], ad, "peft", select=["RG1", "RG30"])
    codes = {f.code for f in rep.targets[0].findings}
    assert "RG101" not in codes and "RG306" in codes


def test_check_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    base = model_dir(tmp_path / "base", MOE_CFG)
    ad = write(tmp_path / "ad", peft_cfg(), fused(down=False))
    code = ("import sys; from regraft.checks.engine import check; from regraft.inspection.adapter import read_adapter;"
            "from regraft.inspection.resolve import resolve_model; b = resolve_model(sys.argv[1]);"
            "check(b, [b], read_adapter(sys.argv[2]), 'vllm'); assert 'torch' not in sys.modules, 'torch imported';"
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    subprocess.run([sys.executable, "-c", code, str(base), str(ad)], check=True)
