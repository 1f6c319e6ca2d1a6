"""Real adapter_config.json files (tests/adapters/corpus, SOURCES.md) with weights synthesised on their own base:
checked against that base they load (or load on different weights) and never give an error; the lineage regraft
finds is the one expect.yaml states, and against a wrong base the right error appears."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from regraft.checks.engine import check
from regraft.checks.finding import Severity, Verdict
from regraft.errors import UnknownModelError
from regraft.inspection.adapter import read_adapter
from regraft.inspection.resolve import resolve_model
from tests.adapters.synth import is_mlx, synth_adapter

CORPUS = Path(__file__).parent / "corpus"
EXPECT = yaml.safe_load((CORPUS / "expect.yaml").read_text())
FOLDERS = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
RELATION_CODES = {"same": set(), "sibling": {"RG201"}, "derived": {"RG201"}, "unknown": {"RG206"},
                  "unrelated": {"RG202"}}


def _cfg(name: str) -> dict:
    return json.loads((CORPUS / name / "adapter_config.json").read_text())


def _base(cfg: dict) -> str | None:
    return cfg.get("model") if is_mlx(cfg) else cfg.get("base_model_name_or_path")


def test_corpus_is_large_and_every_folder_has_an_expectation_and_a_source():
    sources = (CORPUS / "SOURCES.md").read_text()
    assert len(FOLDERS) >= 40
    assert set(FOLDERS) == set(EXPECT["own"]), sorted(set(FOLDERS) ^ set(EXPECT["own"]))
    missing = [f for f in FOLDERS if f"| {f} |" not in sources]
    assert not missing, missing


@pytest.mark.parametrize("name", FOLDERS)
def test_own_base_loads_and_lineage_is_right(name, tmp_path):
    exp, cfg = EXPECT["own"][name], _cfg(name)
    if exp.get("broken"):
        from regraft.errors import FileFormatError

        d = tmp_path / "broken"
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        (d / "adapter_model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}      ")
        with pytest.raises(FileFormatError, match="it is a model's config.json"):
            read_adapter(d)
        return
    if exp["target"] is None:  # the catalog has no such model: a clean error naming it, never a verdict
        base = _base(cfg)
        try:
            own = resolve_model(base, use_hub=False)
        except UnknownModelError:
            return
        # the catalog has gained the model since expect.yaml was written: it must load on it without an error
        t = check(own, [own], read_adapter(synth_adapter(tmp_path / "a", cfg, own))).targets[0]
        assert not [f.code for f in t.findings if f.severity is Severity.ERROR], t.findings
        return
    target = resolve_model(exp["target"])
    adapter = read_adapter(synth_adapter(tmp_path / "a", cfg, target))
    assert adapter.base_model == (None if exp.get("no_base") else _base(cfg))
    t = check(target, [target], adapter).targets[0]
    errors = [f"{f.code}: {f.message}" for f in t.findings if f.severity is Severity.ERROR]
    assert not errors, errors
    assert t.verdict in (Verdict.LOADS, Verdict.LOADS_DIFFERENT_WEIGHTS), t.verdict
    rg2 = {f.code for f in t.findings if f.code in ("RG201", "RG202", "RG206")}
    assert rg2 == RELATION_CODES[exp["relation"]], (rg2, [f.message for f in t.findings if f.code.startswith("RG2")])
    if exp.get("no_base"):
        assert any(f.code == "RG203" for f in t.findings)
    want = Verdict.LOADS_DIFFERENT_WEIGHTS if exp["relation"] in ("sibling", "derived") else Verdict.LOADS
    assert t.verdict is want


@pytest.mark.parametrize("case", EXPECT["wrong"], ids=[f"{c['adapter']}->{c['against']}" for c in EXPECT["wrong"]])
def test_wrong_base_gives_the_right_error(case, tmp_path):
    own = resolve_model(case.get("synth_on") or EXPECT["own"][case["adapter"]]["target"])
    adapter = read_adapter(synth_adapter(tmp_path / "a", _cfg(case["adapter"]), own))
    target = resolve_model(case["against"])
    t = check(own, [target], adapter).targets[0]
    errors = {f.code for f in t.findings if f.severity is Severity.ERROR}
    assert set(case.get("codes", [])) <= errors, (errors, [f.message for f in t.findings])
    if "relation" in case:
        assert {f.code for f in t.findings if f.code in ("RG201", "RG202", "RG206")} == RELATION_CODES[case["relation"]]
    assert t.verdict.value == case["verdict"]


def test_rg202_names_positive_evidence():
    """Every RG202 in the corpus runs says what evidence decided it (config facts or known trunks)."""
    own = resolve_model("mistralai/Mistral-7B-Instruct-v0.3")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        adapter = read_adapter(synth_adapter(Path(d) / "a", _cfg("mistral-7b-instruct-v0.3-peft0180-qv"), own))
        t = check(own, [resolve_model("meta-llama/Llama-3.1-8B")], adapter).targets[0]
    f = next(f for f in t.findings if f.code == "RG202")
    assert f.data["evidence"] in ("config", "data", "names", "weights")
    assert "vocab_size 32768 vs 128256" in f.message


PRODUCERS = sorted(n for n, e in EXPECT["own"].items() if e.get("producer"))


@pytest.mark.parametrize("name", PRODUCERS)
def test_producer_is_named_from_the_folders_own_files(name, tmp_path):
    """The folder's other files (model card, trainer files) beside weights synthesised on its own base: `inspect`
    names the producer that made it, and the layout stays the plain PEFT one."""
    import shutil

    from regraft.inspection.producer import inspect_producer

    exp = EXPECT["own"][name]
    d = synth_adapter(tmp_path / "a", _cfg(name), resolve_model(exp["target"]))
    for f in (CORPUS / name).iterdir():
        if f.name != "adapter_config.json":
            shutil.copy(f, d / f.name)
    rep = inspect_producer(d)
    assert rep.producer == exp["producer"], rep.evidence
    assert rep.layout == "peft-standard", rep.missing

