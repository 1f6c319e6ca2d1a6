import json

import pytest

from regraft.errors import FileFormatError, InputError
from regraft.hybrid.policy import Policy, Signals, decide, load_policy, policy_from_dict


def sig(**kw):
    base = dict(retrieval_top_score=0.8, retrieval_hits=3, answer="Paris is the capital.", mean_logprob=-0.2,
                min_logprob=-1.0, finish_reason="stop")
    base.update(kw)
    return Signals(**base)


def test_confident_grounded_answer_stays_small():
    d = decide(sig(), Policy())
    assert d.target == "small" and not d.escalate
    assert d.reasons == ["all signals within policy"]


@pytest.mark.parametrize("kw,reason", [
    (dict(retrieval_top_score=0.1), "retrieval score 0.100 < 0.300"),
    (dict(mean_logprob=-2.5), "mean logprob -2.500 < -1.500"),
    (dict(answer=""), "empty answer"),
    (dict(finish_reason="length"), "draft cut off at max_tokens (finish_reason=length)"),
    (dict(tool_failures=2), "2 tool failure(s) >= 1"),
    (dict(answer="Sorry, I don't know."), "draft says \"i don't know\""),
    (dict(small_error="backend x: HTTP 503"), "small model failed: backend x: HTTP 503"),
])
def test_each_signal_escalates_with_its_reason(kw, reason):
    d = decide(sig(**kw), Policy())
    assert d.target == "master" and d.escalate
    assert reason in d.reasons


def test_several_reasons_are_all_reported():
    d = decide(sig(retrieval_top_score=0.05, mean_logprob=-3.0, answer=""), Policy())
    assert len(d.reasons) == 3


def test_user_choice_wins():
    assert decide(sig(user_choice="master"), Policy()).target == "master"
    assert decide(sig(user_choice="small", answer="", retrieval_top_score=0.0), Policy()).target == "small"


def test_missing_signal_modes():
    s = sig(mean_logprob=None, min_logprob=None)
    d = decide(s, Policy())
    assert d.target == "small" and "not available: mean logprob" in d.reasons[0]
    d2 = decide(s, policy_from_dict({"missing_signal": "escalate"}))
    assert d2.target == "master" and any("signal unavailable" in r for r in d2.reasons)


def test_format_rules():
    p = policy_from_dict({"escalate_if": {"format": "json"}})
    assert decide(sig(answer='{"a": 1}'), p).target == "small"
    assert decide(sig(answer="not json"), p).target == "master"
    p2 = policy_from_dict({"escalate_if": {"format": r"\d+"}})
    assert decide(sig(answer="42"), p2).target == "small"
    assert decide(sig(answer="forty-two"), p2).target == "master"


def test_decide_is_pure():
    s, p = sig(retrieval_top_score=0.1), Policy()
    before = (s.to_dict(), p.to_dict())
    assert decide(s, p) == decide(s, p)
    assert (s.to_dict(), p.to_dict()) == before


def test_load_yaml_and_json(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("version: 1\nescalate_if:\n  retrieval_score_below: 0.5\n  mean_logprob_below: null\n"
                 "  phrases: [nope]\nretrieval_k: 2\nmissing_signal: escalate\n")
    p = load_policy(y)
    assert p.escalate_if.retrieval_score_below == 0.5 and p.escalate_if.mean_logprob_below is None
    assert p.escalate_if.phrases == ("nope",) and p.retrieval_k == 2
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"master_max_tokens": 64}))
    assert load_policy(j).master_max_tokens == 64
    assert load_policy(None) == Policy()


@pytest.mark.parametrize("text,needle", [
    ("escalate_if:\n  retrival_score_below: 0.3\n", "unknown key(s) retrival_score_below"),
    ("retrieval_k: many\n", "retrieval_k: expected a number"),
    ("missing_signal: maybe\n", "expected 'ignore' or 'escalate'"),
    ("escalate_if:\n  format: '[unclosed'\n", "not 'json' nor a valid regex"),
    ("escalate_if: [1, 2]\n", "escalate_if: expected a mapping"),
    ("a: [\n", "is not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
])
def test_bad_policy_files_name_file_and_problem(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(FileFormatError) as e:
        load_policy(f)
    assert needle in str(e.value) and str(f) in str(e.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_policy(tmp_path / "none.yaml")


def test_policy_in_docs_is_valid_and_equals_the_defaults(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "hybrid.md").read_text()
    block = doc.split("## The policy file", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    f = tmp_path / "policy.yaml"
    f.write_text(block)
    assert load_policy(f) == Policy()
