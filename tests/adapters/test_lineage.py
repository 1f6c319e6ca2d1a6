"""Lineage from evidence: path normalisation of any OS, canonical names through lineage.json (renames, mirrors,
quantised re-uploads), and relations that say 'unrelated' only with positive evidence."""

from __future__ import annotations

import json

import pytest

from regraft.checks.lineage import canonical, data, parse_base, relate, relation, resolve_declared
from regraft.inspection.resolve import resolve_model


@pytest.mark.parametrize("raw,kind,name", [
    ("Qwen/Qwen3-8B", "repo", "Qwen/Qwen3-8B"),
    ("Qwen3-8B", "name", "Qwen3-8B"),
    ("C:\\Users\\me\\models\\Qwen3-0.6B", "local", "Qwen3-0.6B"),
    ("C:/Users/me/models/Qwen3-0.6B/", "local", "Qwen3-0.6B"),
    ("D:\\runs\\Qwen3-8B\\checkpoint-500", "local", "Qwen3-8B"),
    ("~/models/Llama-3.2-3B-Instruct", "local", "Llama-3.2-3B-Instruct"),
    ("./outputs/merged", "local", ""),
    ("../models/Qwen3-4B", "local", "Qwen3-4B"),
    ("/data/hf/Qwen/Qwen3-8B", "local", "Qwen/Qwen3-8B"),
    ("\\\\server\\share\\Qwen3-14B", "local", "Qwen3-14B"),
    ("/root/.cache/huggingface/hub/models--Qwen--Qwen3-8B/snapshots/abc", "hf-cache", "Qwen/Qwen3-8B"),
    ("C:\\Users\\me\\.cache\\huggingface\\hub\\models--unsloth--Qwen3-8B-bnb-4bit\\snapshots\\0a1b", "hf-cache",
     "unsloth/Qwen3-8B-bnb-4bit"),
    # ModelScope cache folders store '.' as '___' (modelscope hub/file_download.py), with or without 'models/'
    ("/root/.cache/modelscope/hub/models/Qwen/Qwen2___5-7B-Instruct", "local", "Qwen/Qwen2.5-7B-Instruct"),
    ("/root/.cache/modelscope/hub/Qwen/Qwen3-0___6B", "local", "Qwen/Qwen3-0.6B"),
    ("C:\\Users\\me\\.cache\\modelscope\\hub\\models\\qwen\\Qwen2___5-1___5B-Instruct", "local",
     "qwen/Qwen2.5-1.5B-Instruct"),
    ("/data/models/Qwen/Qwen3-8B/checkpoint-500", "local", "Qwen/Qwen3-8B"),
])
def test_parse_base_normalises_paths_of_any_os(raw, kind, name):
    b = parse_base(raw)
    assert (b.kind, b.name) == (kind, name)


@pytest.mark.parametrize("name,cid", [
    ("meta-llama/Meta-Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
    ("unsloth/meta-llama-3.1-8b-bnb-4bit", "meta-llama/Llama-3.1-8B"),
    ("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "meta-llama/Llama-3.1-8B-Instruct"),
    ("unsloth/qwen2.5-7b-instruct-unsloth-bnb-4bit", "Qwen/Qwen2.5-7B-Instruct"),
    ("unsloth/Qwen3-4B-Instruct-2507-unsloth-bnb-4bit", "Qwen/Qwen3-4B-Instruct-2507"),
    ("mlx-community/Qwen3-1.7B-4bit", "Qwen/Qwen3-1.7B"),
    ("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit", "meta-llama/Llama-3.1-8B-Instruct"),
    ("Qwen/Qwen3-8B-AWQ", "Qwen/Qwen3-8B"),
    ("Qwen/Qwen3-30B-A3B-GPTQ-Int4", "Qwen/Qwen3-30B-A3B"),
    ("RedHatAI/Qwen3-32B-FP8-dynamic", "Qwen/Qwen3-32B"),
    ("bartowski/Qwen3-14B-GGUF", "Qwen/Qwen3-14B"),
    ("Qwen3-4B-Thinking-2507-MLX-4bit", "Qwen/Qwen3-4B-Thinking-2507"),
])
def test_canonical_names_through_lineage_data(name, cid):
    c = canonical(name)
    assert c.id == cid and c.placed and c.mirror


def test_every_lineage_entry_has_a_source_and_renames_land_in_the_catalog():
    from regraft import catalog

    d = data()
    for section in ("renames", "aliases", "derived"):
        for e in d[section]:
            assert e.get("source"), e
    for e in d["renames"]:
        short = e["to"].split("/")[-1]
        assert catalog.find_model(e["to"]) or short.startswith("Llama-3.1-405B"), e
    assert all(isinstance(v, str) and v for k, v in d["mirror_orgs"].items())


@pytest.mark.parametrize("declared,target,rel,evidence", [
    ("meta-llama/Meta-Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "same", "data"),
    ("unsloth/Qwen3-4B-Instruct-2507-unsloth-bnb-4bit", "Qwen/Qwen3-4B", "sibling", "names"),
    ("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-Instruct-2507", "sibling", "names"),
    ("C:\\Users\\me\\models\\Qwen3-0.6B", "Qwen/Qwen3-0.6B", "same", "names"),
    ("randomorg/Qwen3-8B-GPTQ", "Qwen/Qwen3-8B", "sibling", "names"),  # not a listed mirror: weights unverified
    ("someone/my-finetune", "Qwen/Qwen3-8B", "unknown", "none"),
    ("./outputs/merged", "Qwen/Qwen3-8B", "unknown", "none"),
    ("meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B", "unknown", "data"),  # listed as undecided
    ("Qwen/Qwen2-7B", "Qwen/Qwen2.5-7B", "unrelated", "names"),  # two known trunks
    ("meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-Instruct-v0.3", "unrelated", "config"),
    ("Qwen/Qwen2.5-Coder-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "derived", "data"),
    ("/root/.cache/modelscope/hub/models/Qwen/Qwen2___5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "same", "names"),
    ("/home/u/.cache/modelscope/hub/qwen/Qwen2___5-1___5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "same", "names"),
    ("/root/.cache/modelscope/hub/models/LLM-Research/Meta-Llama-3___1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct",
     "same", "names"),
    ("/root/.cache/modelscope/hub/models/Qwen/Qwen3-0___6B", "Qwen/Qwen3-8B", "unrelated", "names"),
])
def test_relations_and_their_evidence(declared, target, rel, evidence):
    t = resolve_model(target)
    lin = relate(declared, t, resolve_declared(declared, t))
    assert (lin.relation, lin.evidence) == (rel, evidence), lin.why
    if rel == "unknown":
        assert lin.how_to_confirm


def test_unplaced_names_never_give_unrelated():
    """The bug of issue 13: a name regraft cannot place was called 'unrelated weights'."""
    t = resolve_model("Qwen/Qwen3-8B")
    for declared in ("org/Tiny-Base", "my-model", "/mnt/ckpt/step-900", "C:\\x\\y", "hf-user/qwen3-8b-sft-v2",
                     "Qwen/Qwen3-8B-Instruct-finetuned"):
        assert relate(declared, t).relation != "unrelated", declared
    assert relation("org/Tiny-Base", "org/Other-7B") == "unknown"


def test_a_local_declared_base_is_resolved_and_its_config_compared(tmp_path):
    base = tmp_path / "my-base"
    base.mkdir()
    cfg = {k: v for k, v in __import__("regraft").catalog.model_entry("mistralai/Mistral-7B-Instruct-v0.3").items()
           if not k.startswith("_")}
    (base / "config.json").write_text(json.dumps(cfg))
    t = resolve_model("meta-llama/Llama-3.1-8B")
    spec = resolve_declared(str(base), t)
    assert spec is not None and spec.path == base
    lin = relate(str(base), t, spec)
    assert lin.relation == "unrelated" and lin.evidence == "config" and "vocab_size 32768 vs 128256" in lin.text
    same = relate(str(base), resolve_model("mistralai/Mistral-7B-Instruct-v0.3"), spec)
    assert same.relation == "unknown"  # folder 'my-base' places nothing; equal config facts prove no lineage
