"""Per-member cache keys: a recipe change rebuilds that member and its dependents only (fake tier, fast)."""

from __future__ import annotations

import copy
import json

import pytest

pytestmark = pytest.mark.zoo


@pytest.fixture
def fake_tier(tmp_path, monkeypatch):
    from bench.zoo import build

    monkeypatch.setenv("REGRAFT_ZOO_DIR", str(tmp_path))
    cfg = {"batch": 4, "tasks": ["A"], "adapters": {}, "lora": {"r": 1, "alpha": 1, "seed": 0, "steps": 1, "lr": 0.1},
           "models": {"a": {"kind": "stub", "v": 1}, "b": {"kind": "stub", "from": "a", "v": 1},
                      "c": {"kind": "stub", "from": "b", "v": 1}, "d": {"kind": "stub", "v": 1}}}
    monkeypatch.setitem(build.TIERS, "fake", cfg)
    return cfg


def _built_at(tier):
    from bench.zoo import build

    man = build.manifest(tier)
    return {n: (build.tier_dir(tier) / n / ".key").stat().st_mtime_ns for n in man["members"]}, man


def test_recipe_change_rebuilds_member_and_dependents_only(fake_tier):
    from bench.zoo import build

    root = build.build_zoo("fake", quiet=True, jobs=2)
    assert root == build.tier_dir("fake") and root.name == "fake"
    t0, man = _built_at("fake")
    assert sorted(man["builds"][-1]["members"]) == ["zoo/a", "zoo/b", "zoo/c", "zoo/d"]
    env = man["builds"][-1]["env"]  # where it ran: the key covers recipe and code, not libraries and CPU
    assert set(env) >= {"torch", "transformers", "peft", "cpu", "cpu_capability"}
    assert all(build.member_state("fake", n) == "built" for n in build.member_names("fake"))
    keys0 = {n: build.member_key("fake", n) for n in build.member_names("fake")}
    assert build.build_zoo("fake", quiet=True) == root and len(build.manifest("fake")["builds"]) == 1  # all cached

    fake_tier["models"]["b"]["v"] = 2  # change b's recipe: b and c (built from b) are stale, a and d are not
    assert [build.member_state("fake", n) for n in ("zoo/a", "zoo/b", "zoo/c", "zoo/d")] == \
        ["built", "stale", "stale", "built"]
    keys1 = {n: build.member_key("fake", n) for n in build.member_names("fake")}
    assert {n for n in keys0 if keys0[n] != keys1[n]} == {"zoo/b", "zoo/c"}
    build.build_zoo("fake", quiet=True, jobs=2)
    t1, man = _built_at("fake")
    assert sorted(man["builds"][-1]["members"]) == ["zoo/b", "zoo/c"]
    assert t1["zoo/a"] == t0["zoo/a"] and t1["zoo/d"] == t0["zoo/d"]
    assert t1["zoo/b"] != t0["zoo/b"] and t1["zoo/c"] != t0["zoo/c"]
    assert json.loads((root / "zoo" / "b" / "stub.safetensors").read_text())["v"] == 2
    assert man["members"]["zoo/b"]["key"] == keys1["zoo/b"] == (root / "zoo" / "b" / ".key").read_text()
    assert not list((root / ".tmp").glob("*")), "temp dirs are cleaned up"

    # zoo_path rebuilds a stale member on demand (and refuses with build=False)
    fake_tier["models"]["d"]["v"] = 3
    from regraft.errors import InputError

    with pytest.raises(InputError, match="stale"):
        build.zoo_path("fake", "d", build=False)
    assert build.zoo_path("fake", "d") == root / "zoo" / "d"
    assert build.manifest("fake")["builds"][-1]["members"] == ["zoo/d"]


def test_keys_follow_dependencies_and_tier_settings():
    """On the real smoke config: a LoRA's key depends on its base's recipe, the tier batch and the LoRA recipe."""
    from bench.zoo import build

    cfg = build.tier_config("smoke")
    k = {n: build.member_key("smoke", n, cfg) for n in build.member_names("smoke")}
    assert len(set(k.values())) == len(k)
    c2 = copy.deepcopy(cfg)
    c2["models"]["T3"]["steps"] += 1
    k2 = {n: build.member_key("smoke", n, c2) for n in build.member_names("smoke")}
    assert {n for n in k if k[n] != k2[n]} == {"zoo/T3", "lora/A/T3"}
    c3 = copy.deepcopy(cfg)
    c3["models"]["S"]["lr"] *= 2  # everything built from S changes, independent models do not
    k3 = {n: build.member_key("smoke", n, c3) for n in build.member_names("smoke")}
    changed = {n for n in k if k[n] != k3[n]}
    assert "zoo/S" in changed and "zoo/T1" in changed and "lora/A/T1" in changed and "zoo/Pk" in changed
    assert not changed & {"zoo/T3", "zoo/T3p", "zoo/SM", "lora/A/SM", "lora/A/T3"}
    c4 = copy.deepcopy(cfg)
    c4["lora"]["lr"] *= 2  # the LoRA recipe: every adapter, no model
    k4 = {n: build.member_key("smoke", n, c4) for n in build.member_names("smoke")}
    assert {n for n in k if k[n] != k4[n]} == {n for n in k if n.startswith("lora/")}
