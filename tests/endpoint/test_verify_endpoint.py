"""verify --endpoint against a real server process on loopback: no-op caught, applied verified, corruption caught."""

import json
import warnings

import pytest

from regraft.verify.endpoint import verify_endpoint

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.server


def test_server_speaks_openai(server):
    """The official client reads the test server's completions and log-probs."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key="none", timeout=20, max_retries=0)
    assert {m.id for m in client.models.list()} >= {"qwen3-tiny", "good", "noop"}
    r = client.completions.create(model="good", prompt="The capital of France", max_tokens=3, logprobs=3,
                                  temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.top_logprobs[0]) == 3 and all(v <= 0 for v in lp.token_logprobs)


def test_silent_noop_is_caught(server, world):
    r = verify_endpoint(server, "noop", adapter_dir=world["lora"], base_dir=world["base"], n_probes=3)
    assert r.verdict == "no-effect" and r.exit_code == 1
    assert r.effect.max_diff == 0 and r.effect.positions == r.probes * r.max_tokens
    assert r.causes  # likely causes are listed
    # the local reference shows what should have happened: served == local base, far from local base+adapter
    assert r.reference["served_adapter_vs_local_base"]["max_diff"] < 1e-4
    assert r.reference["served_adapter"]["mean_diff"] > 0.1


def test_applied_adapter_matches_transformers_peft(server, world):
    r = verify_endpoint(server, "good", adapter_dir=world["lora"], base_dir=world["base"], n_probes=3)
    assert r.verdict == "applied" and r.exit_code == 0, r.reason
    assert r.effect.max_diff > 0.1 and r.noise.max_diff == 0  # the base's repeat is bit-identical here
    ref = r.reference
    assert ref["close"] and ref["served_adapter"]["max_diff"] < 1e-4 and ref["served_base"]["max_diff"] < 1e-4
    assert ref["served_adapter"]["positions"] >= r.probes


@pytest.mark.parametrize("name", ["swapped", "half"])
def test_corrupted_adapter_is_applied_but_wrong(server, world, name):
    """A/B swapped on the square modules ((BA)^T), or half the scale: it changes the output, just not correctly."""
    r = verify_endpoint(server, name, adapter_dir=world["lora"], base_dir=world["base"], n_probes=3)
    assert r.verdict == "applied-wrong" and r.exit_code == 1, r.reason
    dev, eff = r.reference["served_adapter"]["mean_diff"], r.reference["served_adapter_vs_local_base"]["mean_diff"]
    assert dev > 0.1 * eff and r.reference["served_base"]["max_diff"] < 1e-4


def test_without_local_reference_and_with_reference_endpoint(server):
    """No --adapter: applied is all it can say; --reference URL compares with another served copy."""
    r = verify_endpoint(server, "good")  # base found from /v1/models (parent), chat API (no local template)
    assert r.verdict == "applied" and r.api == "chat" and r.reference is None
    r2 = verify_endpoint(server, "swapped", reference=server, reference_model="good")
    assert r2.verdict == "applied-wrong" and not r2.reference["close"]


def test_no_logprobs_falls_back_to_text_and_says_unknown(server):
    r = verify_endpoint(server, "nolp", base_model="qwen3-tiny", n_probes=3)
    assert r.verdict == "unknown" and r.exit_code == 3 and "greedy texts differ" in r.reason and r.effect is None
    r2 = verify_endpoint(server, "rejectlp", n_probes=2)  # the field refused (400): asked again without it
    assert r2.verdict == "unknown" and "greedy texts differ" in r2.reason


def test_cli_verdicts_and_bad_input(server, world, capsys, tmp_path):
    import time

    from regraft.cli.main import main

    assert main(["verify", "--endpoint", server, "--model", "noop", "--format", "json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "no-effect" and d["effect"]["max_diff"] == 0 and d["exit_code"] == 1
    assert main(["verify", "--endpoint", server, "--model", "noop", "--runtime", "vllm", "--probes", "2"]) == 1
    out = capsys.readouterr().out
    assert "NO EFFECT" in out and "--lora-target-modules" in out and "vllm/issues/55193" in out
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"prompt": "The capital of France is"}\n{"prompt": "LoRA adapters are"}\n')
    assert main(["verify", "--endpoint", server, "--model", "good", "--probes", str(seeds)]) == 0
    out = capsys.readouterr().out
    assert "APPLIED" in out and "2 probes (seeds)" in out
    # bad input: one line, exit 2, bounded in time
    assert main(["verify", "--endpoint", server, "--model", "nope"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err
    assert main(["verify", "--endpoint", "http://127.0.0.1:9/v1", "--model", "x", "--timeout", "1"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    t = time.monotonic()
    assert main(["verify", "--endpoint", server, "--model", "slow", "--timeout", "1", "--probes", "1"]) == 2
    assert time.monotonic() - t < 6 and "no answer within" in capsys.readouterr().err
    assert main(["verify", "--endpoint", server, "--model", "good", "--merge"]) == 2  # a flag that does not apply
    assert main(["verify", str(world["lora"]), "--on", str(world["base"]), "--base-model", "x"]) == 2
    err = capsys.readouterr().err
    assert "--merge do not apply" in err and "--base-model only apply with --endpoint" in err
