"""The transfer bench's CI criteria on the smoke zoo (research 7.6), one seed: the projection recovers the exact
reparametrisation Pk, and distillation with 256 synthetic prompts carries the adapter to the independent,
other-shaped T3 (GR >= 0.4) better than a fresh LoRA on 5 real examples. Builds the smoke zoo if needed (shared,
locked cache), so it is slow."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_transfer_bench_smoke_criteria(tmp_path):
    from bench.port_methods import main

    main(["--tier", "smoke", "--pairs", "Pk", "S->T3", "--budgets", "256", "--baselines", "5", "--n-test", "200",
          "--n-teacher", "100", "--n-generic", "100", "--out-dir", str(tmp_path), "--threads", "2",
          "--distill-steps", "300"])  # bounded for CI time; the committed tables use the default (1500, early stop)
    res = json.loads((tmp_path / "transfer_smoke.json").read_text())
    pk = res["pairs"]["Pk"]["conditions"]
    assert abs(pk["project"]["em"] - pk["source+adapter"]["em"]) <= 0.01
    assert pk["project"]["teacher_agreement"] >= 0.99
    t3 = res["pairs"]["S->T3"]["conditions"]
    assert t3["distill-256"]["gr"] >= 0.4
    assert t3["distill-256"]["em"] > t3["lora-5"]["em"]
    assert abs(t3["project"]["gr"]) < 0.2  # no lineage: the projection alone carries ~nothing (reported, expected)
    assert (tmp_path / "transfer_smoke.md").exists() and (tmp_path / "transfer_smoke.png").exists()
