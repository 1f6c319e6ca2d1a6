"""The transfer bench's CI criteria on the smoke zoo tier (research 7.6), one seed: the projection recovers the exact
reparametrisation Pk, and distillation with 256 synthetic prompts carries the adapter to the independent,
other-shaped T3 (GR >= 0.4) better than a fresh LoRA on 5 real examples. Runs only the conditions it asserts on
(Pk: project; S->T3: retrained upper bound, project, distill-256, lora-5) and builds only the smoke members they
use (S, T3, Pk, lora/A/S, lora/A/T3; shared, locked cache), so it is slow. It stays on smoke, not on the tests'
cheaper ci tier: there distill-256 at 300 steps reached GR 0.18 (EM 0.180), below the criterion's 0.4
(bench/results/ci_time.md)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

TIER = "smoke"
COMMON = ["--budgets", "256", "--n-test", "200", "--n-teacher", "100", "--n-generic", "100", "--threads", "1"]


def test_transfer_bench_smoke_criteria(tmp_path):
    from bench.port_methods import main

    # Pk: only the projection is asserted (no GR, so no retrained upper bound on Pk, no distill, no baselines)
    main(["--tier", TIER, "--pairs", "Pk", "--skip", "retrained", "distill", "--baselines", *COMMON,
          "--out-dir", str(tmp_path / "pk")])
    res = json.loads((tmp_path / "pk" / f"transfer_{TIER}.json").read_text())
    pk = res["pairs"]["Pk"]["conditions"]
    assert set(pk) == {"source+adapter", "target base", "project"}
    assert abs(pk["project"]["em"] - pk["source+adapter"]["em"]) <= 0.01
    assert pk["project"]["teacher_agreement"] >= 0.99

    main(["--tier", TIER, "--pairs", "S->T3", "--baselines", "5", *COMMON, "--out-dir", str(tmp_path / "t3"),
          "--distill-steps", "300"])  # bounded for CI time; the committed tables use the default (1500, early stop)
    res = json.loads((tmp_path / "t3" / f"transfer_{TIER}.json").read_text())
    t3 = res["pairs"]["S->T3"]["conditions"]
    assert t3["distill-256"]["gr"] >= 0.4
    assert t3["distill-256"]["em"] > t3["lora-5"]["em"]
    assert abs(t3["project"]["gr"]) < 0.2  # no lineage: the projection alone carries ~nothing (reported, expected)
    for d in ("pk", "t3"):
        assert (tmp_path / d / f"transfer_{TIER}.md").exists() and (tmp_path / d / f"transfer_{TIER}.png").exists()
