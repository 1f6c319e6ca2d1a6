"""The optional llama.cpp tier (`pytest -m llamacpp`): real llama-cpp-python, models converted by llama.cpp itself.

1. The GGUF LoRAs `regraft port lora --runtime llama.cpp` writes (plain, rsLoRA, rank 12, MoE per-expert) give the
   logits of transformers + PEFT in llama.cpp; llama.cpp's own convert_lora_to_gguf.py does not on rsLoRA (it
   writes lora_alpha and llama.cpp applies alpha/r, not alpha/sqrt(r)).
2. `verify --endpoint` against llama-cpp-python's OpenAI server (base and base+LoRA, two processes): the regraft GGUF
   is applied and matches PEFT; the reference converter's rsLoRA GGUF is applied, but wrong.
"""

import json
import os
import warnings

import pytest

from tests.endpoint.llamacpp_world import (
    build_moe,
    compare,
    hf_logits,
    llama_cpp_src,
    llama_logits,
    port_gguf,
    reference_lora_gguf,
    start_server,
    to_gguf,
)

warnings.filterwarnings("ignore")
pytestmark = [pytest.mark.llamacpp, pytest.mark.slow, pytest.mark.server]
pytest.importorskip("llama_cpp")
pytest.importorskip("peft")
if llama_cpp_src() is None:
    pytest.skip("llama.cpp converters not found: set LLAMA_CPP_SRC (see tests/endpoint/llamacpp_world.py)",
                allow_module_level=True)

RESULTS = {}


@pytest.fixture(scope="module")
def lw(tmp_path_factory):
    from tests.hybrid.tiny import build_tiny_qwen3
    from tests.factories import peft_adapter, v4_moe_adapter

    d = tmp_path_factory.mktemp("llamacpp")
    w = {"dir": d, "dense": build_tiny_qwen3(d / "dense"), "moe": build_moe(d / "moe")}
    w["dense.gguf"], w["moe.gguf"] = to_gguf(w["dense"], d / "dense.gguf"), to_gguf(w["moe"], d / "moe.gguf")
    w["plain"] = peft_adapter(w["dense"], d / "plain")
    w["rslora"] = peft_adapter(w["dense"], d / "rslora", r=8, alpha=16, use_rslora=True, seed=1)
    w["r12"] = peft_adapter(w["dense"], d / "r12", r=12, alpha=24, seed=2)
    w["moe-v4"] = v4_moe_adapter(w["moe"], d / "moe-v4")
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(w["dense"]))
    w["ids"] = tok("LoRA adapters are small low-rank matrices. The capital of France is Paris.")["input_ids"]
    yield w
    out = os.environ.get("REGRAFT_LLAMACPP_RESULTS")
    if out:
        with open(out, "w") as f:
            json.dump(RESULTS, f, indent=2)


@pytest.mark.parametrize("name,model", [("plain", "dense"), ("rslora", "dense"), ("r12", "dense"), ("moe-v4", "moe")])
def test_regraft_gguf_lora_matches_peft(lw, name, model):
    gguf = port_gguf(lw[name], lw[model], lw["dir"] / f"{name}.gguf")
    ids = lw["ids"]
    base = compare(llama_logits(lw[f"{model}.gguf"], None, ids), hf_logits(lw[model], None, ids))
    got = compare(llama_logits(lw[f"{model}.gguf"], gguf, ids), hf_logits(lw[model], lw[name], ids))
    effect = compare(hf_logits(lw[model], lw[name], ids), hf_logits(lw[model], None, ids))
    RESULTS[f"regraft:{name}"] = {"lora": got, "base": base, "adapter_effect": effect}
    tol = 1e-5 * max(1.0, got["max_abs_reference_logit"])  # float32 GGUF: rounding relative to the logits' scale
    assert base["max_abs_logit"] < tol
    assert got["max_abs_logit"] < tol and got["top1_agreement"] == 1.0
    assert effect["max_abs_logit"] > 100 * got["max_abs_logit"]  # the adapter matters, and it is applied


def test_reference_converter_ignores_rslora_scale(lw):
    ids = lw["ids"]
    want = hf_logits(lw["dense"], lw["rslora"], ids)
    ours = compare(llama_logits(lw["dense.gguf"], port_gguf(lw["rslora"], lw["dense"], lw["dir"] / "rs-ours.gguf"),
                                ids), want)
    ref_gguf = reference_lora_gguf(lw["rslora"], lw["dense"], lw["dir"] / "rs-ref.gguf")
    ref = compare(llama_logits(lw["dense.gguf"], ref_gguf, ids), want)
    RESULTS["rslora:regraft"], RESULTS["rslora:convert_lora_to_gguf"] = ours, ref
    assert ours["max_abs_logit"] < 1e-5 * max(1.0, ours["max_abs_reference_logit"]) and ours["top1_agreement"] == 1.0
    assert ref["max_abs_logit"] > 100 * ours["max_abs_logit"] and ref["top1_agreement"] < 0.9


def test_llama_cpp_always_normalises_qwen3_moe_routing(lw):
    """llama.cpp's qwen3moe graph renormalises the top-k routing weights (build_moe_ffn norm_w=true) and the
    converter does not record norm_topk_prob: a Qwen3-MoE with norm_topk_prob=false is served as another model."""
    m = build_moe(lw["dir"] / "moe-nonorm", norm_topk_prob=False)
    g = to_gguf(m, lw["dir"] / "moe-nonorm.gguf")
    ids = lw["ids"]
    off = compare(llama_logits(g, None, ids), hf_logits(m, None, ids))
    on = compare(llama_logits(lw["moe.gguf"], None, ids), hf_logits(lw["moe"], None, ids))
    RESULTS["qwen3_moe_norm_topk_prob"] = {"false": off, "true": on}
    assert on["max_abs_logit"] < 1e-5 < 1e-3 < off["max_abs_logit"]


def test_verify_endpoint_on_llama_cpp_server(lw):
    from regraft.verify.endpoint import verify_endpoint
    from tests.hybrid.procs import stop

    d = lw["dir"]
    ours = port_gguf(lw["rslora"], lw["dense"], d / "rs-ours-srv.gguf")
    ref = d / "rs-ref.gguf" if (d / "rs-ref.gguf").is_file() else reference_lora_gguf(lw["rslora"], lw["dense"],
                                                                                       d / "rs-ref.gguf")
    procs = []
    try:
        pb, base = start_server(lw["dense.gguf"], None, d / "srv-base.log")
        procs.append(pb)
        po, url_ours = start_server(lw["dense.gguf"], ours, d / "srv-ours.log")
        procs.append(po)
        pr, url_ref = start_server(lw["dense.gguf"], ref, d / "srv-ref.log")
        procs.append(pr)
        kw = {"base_endpoint": base, "adapter_dir": lw["rslora"], "base_dir": lw["dense"], "runtime": "llama.cpp"}
        r = verify_endpoint(url_ours, "tiny", **kw)
        RESULTS["verify:regraft-gguf"] = {"verdict": r.verdict, "reason": r.reason, "reference": r.reference}
        assert r.verdict == "applied" and r.reference["close"] and r.reference["base_comparable"], r.reason
        r2 = verify_endpoint(url_ref, "tiny", **kw)
        RESULTS["verify:convert_lora_to_gguf"] = {"verdict": r2.verdict, "reason": r2.reason}
        assert r2.verdict == "applied-wrong", r2.reason
        r3 = verify_endpoint(base, "tiny", **kw)  # "served with the LoRA" but started without --lora_path
        assert r3.verdict == "no-effect" and r3.causes[0]["cause"].startswith("the server was started without --lora")
    finally:
        for p in procs:
            stop(p)
