"""The test tier (smoke, or REGRAFT_TEST_TIER) of the tiny model world: loads, scores, drift, exact reparametrisation, determinism."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.zoo

MODELS = ["S", "T1", "T2", "T3", "T3p", "SM", "master", "Pk"]
TARGETS = ["T1", "T2", "T3", "T3p"]  # retrained (upper-bound) Task-A LoRAs on every transfer target
N = 200  # test items per score: keeps the suite fast; EM resolution 0.005


@pytest.fixture(scope="session")  # not module: an xdist worker tears module fixtures down between its batches
def scores(zoo_smoke):
    from bench.zoo import scores as evaluate

    root = zoo_smoke
    out = {}
    for m in ["S", "T1", "T2", "T3", "T3p", "SM", "master"]:
        out[m] = evaluate.evaluate(root / "zoo" / m, task="A", n=N)
    for m in ["S", "SM"] + TARGETS:
        out[m + "+A"] = evaluate.evaluate(root / "zoo" / m, root / "lora" / "A" / m, task="A", n=N)
    for m in ["T1", "T3p"]:  # S's adapter copied as is (same shapes only)
        out[m + "<-S+A"] = evaluate.evaluate(root / "zoo" / m, root / "lora" / "A" / "S", task="A", n=N)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_model_loads_with_auto_classes_offline(zoo_smoke, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    d = zoo_smoke / "zoo" / name
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True)
    gen = GenerationConfig.from_pretrained(d, local_files_only=True)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and tok.pad_token_id == 0
    assert sorted(gen.eos_token_id) == [0, 2]
    text = tok.apply_chat_template([{"role": "user", "content": "rev: abc"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nrev: abc<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("T: abcde = ")["input_ids"]
    assert len(ids) == 11 and tok.decode(ids) == "T: abcde = "
    assert model.config.vocab_size == 96 and model.get_input_embeddings().weight.shape[0] == 96
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, 11, 96) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["A/S", "A/SM", "A/T1", "A/T2", "A/T3", "A/T3p", "B/S", "C/S"])
def test_adapters_are_standard_peft_dirs(zoo_smoke, name):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    d = zoo_smoke / "lora" / name
    name = name.split("/")[1]
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == f"zoo/{name}" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
    base = AutoModelForCausalLM.from_pretrained(zoo_smoke / "zoo" / name)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        ref = base(input_ids=ids).logits
        peft = PeftModel.from_pretrained(base, str(d)).eval()
        out = peft(input_ids=ids).logits
    assert (out - ref).abs().max() > 1e-3  # the adapter changes the function


def test_base_models_cannot_do_task_a(scores):
    for m in ["S", "T1", "T2", "T3", "T3p", "SM"]:
        assert scores[m]["exact_match"] <= 0.02, (m, scores[m])


def test_source_adapter_solves_task_a(scores):
    assert scores["S+A"]["exact_match"] >= 0.6, scores["S+A"]
    assert scores["S+A"]["gold_nll"] < scores["S"]["gold_nll"] - 1.0
    assert scores["SM+A"]["exact_match"] >= 0.3, scores["SM+A"]


def test_retrained_target_adapters_solve_task_a(scores):
    for m in TARGETS:
        assert scores[m + "+A"]["exact_match"] >= 0.5, (m, scores[m + "+A"])


def test_lora_side_effect_on_generic_text_is_small(zoo_smoke):
    """The LoRA recipe (task batches + replay of generic text) leaves generic-text NLL within 5 % of the base
    (without replay the Task-A adapter took it from 0.84 to ~5.5 nats/token)."""
    from bench.zoo import scores as evaluate

    for m in ["S", "T3"]:
        base = evaluate.generic_nll(evaluate.load(zoo_smoke / "zoo" / m), n=100)
        lora = evaluate.generic_nll(evaluate.load(zoo_smoke / "zoo" / m, zoo_smoke / "lora" / "A" / m), n=100)
        assert lora <= 1.05 * base, (m, base, lora)


def test_tasks_b_and_c_adapters_on_s(zoo_smoke):
    from bench.zoo import scores as evaluate

    S = zoo_smoke / "zoo" / "S"
    base_b, lora_b = (evaluate.evaluate(S, a, task="B", n=N) for a in (None, zoo_smoke / "lora" / "B" / "S"))
    # held-out template: the tiny LoRA memorises the facts per template and barely generalises (measured EM
    # 0.04 vs 0.02 base, bench/results/zoo_smoke.md); only its gold NLL is required to improve
    assert base_b["exact_match"] <= 0.05 and lora_b["gold_nll"] < base_b["gold_nll"] - 0.2, (base_b, lora_b)
    train_b = evaluate.evaluate(S, zoo_smoke / "lora" / "B" / "S", task="B", split="train", n=N)
    assert train_b["exact_match"] >= 0.8, train_b  # the new facts are learnt (on the training templates)
    base_c, lora_c = (evaluate.evaluate(S, a, task="C", n=N) for a in (None, zoo_smoke / "lora" / "C" / "S"))
    assert base_c["exact_match"] <= 0.02 and base_c["format_rate"] <= 0.02, base_c
    assert lora_c["format_rate"] >= 0.9 and lora_c["exact_match"] >= 0.3, lora_c


def test_copying_the_adapter_works_with_lineage_and_fails_without(scores):
    """The world has the structure the port engineers rely on: T1 (Base->Instruct) keeps S's adapter working
    when copied, T3p (same shapes, other seed) does not."""
    assert scores["T1<-S+A"]["exact_match"] >= scores["T3p<-S+A"]["exact_match"] + 0.2, scores
    assert scores["T3p<-S+A"]["exact_match"] <= 0.05, scores["T3p<-S+A"]
    assert scores["T3p<-S+A"]["gold_nll"] > scores["T1<-S+A"]["gold_nll"] + 2.0


def test_master_is_stronger_than_source(scores):
    assert scores["master"]["exact_match"] >= scores["S"]["exact_match"] + 0.3, scores["master"]
    assert scores["master"]["gold_nll"] < scores["S"]["gold_nll"]


def test_t1_drift_is_small_and_t3p_drift_is_large(zoo_smoke):
    from bench.zoo.report import drift

    d1 = drift(zoo_smoke / "zoo" / "S", zoo_smoke / "zoo" / "T1")
    d3 = drift(zoo_smoke / "zoo" / "S", zoo_smoke / "zoo" / "T3p")
    assert 0.001 < d1["sigma"] < 0.15, d1
    assert d3["sigma"] > 0.4, d3
    assert d3["sigma"] > 4 * d1["sigma"]


def test_pk_is_an_exact_reparametrisation_of_s(zoo_smoke, zoo_tier):
    from transformers import AutoModelForCausalLM

    from bench.zoo import reparam_maps, world

    s = AutoModelForCausalLM.from_pretrained(zoo_smoke / "zoo" / "S", dtype=torch.float64).eval()
    pk = AutoModelForCausalLM.from_pretrained(zoo_smoke / "zoo" / "Pk", dtype=torch.float64).eval()
    maps = reparam_maps(zoo_tier)
    H = s.config.hidden_size
    hid = maps["hidden"]
    assert sorted(i for i in hid if i >= 0) == list(range(H)) and len(hid) == pk.config.hidden_size > H
    assert hid != sorted(hid)  # really permuted
    assert pk.config.num_hidden_layers == s.config.num_hidden_layers + 1
    ids = torch.tensor(world.encode_batch(["T: abcdefg = ", "the big cat sees a dog.", "rev: hello > "])[:1])
    texts = ["T: abcdefg = ", "copy: hello > hel", "the big cat sees a dog"]
    for t in texts:
        ids = torch.tensor([world.encode(t)])
        with torch.no_grad():
            a, b = s(input_ids=ids).logits, pk(input_ids=ids).logits
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (t, (a - b).abs().max())
    # the ground-truth maps really relate the weights: embedding columns are permuted copies
    es, ep = s.get_input_embeddings().weight, pk.get_input_embeddings().weight
    for j, i in enumerate(hid):
        if i >= 0:
            assert torch.equal(ep[:, j], es[:, i])
        else:
            assert torch.count_nonzero(ep[:, j]) == 0


def test_same_seed_same_weights(zoo_smoke, zoo_tier):
    """Rebuilding S's Task-A adapter from the cached S reproduces the cached file bit for bit."""
    from rich.progress import Progress

    from bench.zoo import build, steps, weights_hash

    cfg = build.tier_config(zoo_tier)
    man = build.manifest(zoo_tier)["members"]
    assert weights_hash(zoo_smoke / "zoo" / "S") == man["zoo/S"]["sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "a"
        out.mkdir()
        small = {**cfg, "lora": {**cfg["lora"], "steps": 40}, "lora_member": {}}  # no per-adapter step override
        h = []
        for k in range(2):
            o = Path(tmp) / f"run{k}"
            o.mkdir()
            steps.build_member(zoo_tier, small, "lora/A/S", zoo_smoke, o, Progress(disable=True))
            h.append(weights_hash(o))
        assert h[0] == h[1]
        other = {**cfg, "lora": {**cfg["lora"], "steps": 40, "seed": 101}, "lora_member": {}}
        o = Path(tmp) / "run_other"
        o.mkdir()
        steps.build_member(zoo_tier, other, "lora/A/S", zoo_smoke, o, Progress(disable=True))
        assert weights_hash(o) != h[0]


def test_fresh_init_is_seeded():
    from bench.zoo import models
    from bench.zoo.build import SMOKE_S

    a, b, c = (models.new_model(SMOKE_S, s) for s in (0, 0, 1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.embed_tokens.weight"], sc["model.embed_tokens.weight"])


def test_unknown_names_are_input_errors(zoo_tier):
    from bench.zoo import load_task, zoo_path
    from regraft.errors import InputError

    with pytest.raises(InputError, match="unknown task"):
        load_task("Z")
    with pytest.raises(InputError, match="unknown zoo tier"):
        zoo_path("huge", "S")
    with pytest.raises(InputError, match="no member"):
        zoo_path(zoo_tier, "T9")


def test_cli_both_entry_points_and_user_errors(zoo_smoke, zoo_tier):
    import subprocess
    import sys

    from bench.zoo.build import REPO

    r = subprocess.run([sys.executable, "bench/zoo", "list", "--tier", zoo_tier], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "zoo/S" in r.stdout and "lora/A/S" in r.stdout and "missing" not in r.stdout
    r = subprocess.run([sys.executable, "-m", "bench.zoo", "eval", "S", "--task", "Z", "--n", "5"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown task 'Z'")
