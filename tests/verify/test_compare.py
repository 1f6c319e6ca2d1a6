"""Golden cases for the pure comparisons behind verify --endpoint."""

import math

from regraft.verify.compare import Pos, coarse_kl, compare_generations, pos_diff, ref_stats, shared_prefix
from regraft.verify.endpoint import decide, parse_chat_logprobs, parse_completion_logprobs


def P(tok, top):
    return Pos(tok, top.get(tok), top)


def test_pos_diff_is_a_lower_bound_over_both_top_k():
    a = P("x", {"x": -0.1, "y": -2.0})
    assert pos_diff(a, a) == 0
    assert math.isclose(pos_diff(a, P("x", {"x": -0.3, "y": -1.9})), 0.2)
    # z is in b's top-k only: a's log-prob of z is at most a's smallest (-2.0), so the gap is at least 1.5
    assert math.isclose(pos_diff(a, P("x", {"x": -0.1, "z": -0.5})), 1.5)


def test_generations_are_compared_on_shared_context_only():
    a = [P("x", {"x": -0.1}), P("y", {"y": -0.2}), P("q", {"q": -0.3})]
    b = [P("x", {"x": -0.1}), P("z", {"z": -0.2}), P("q", {"q": -9.0})]
    assert shared_prefix(a, b) == 2  # the third position has another context: never compared
    s = compare_generations([a], [b])
    assert s.positions == 2 and s.top1_agree == 0.5 and s.texts_identical == 0
    assert compare_generations([a], [a]).texts_identical == 1


def test_coarse_kl():
    p = {"a": math.log(0.5), "b": math.log(0.3)}
    assert coarse_kl(p, p) == 0
    q = {"a": math.log(0.3), "b": math.log(0.5)}
    want = 0.5 * math.log(0.5 / 0.3) + 0.3 * math.log(0.3 / 0.5)  # rest: 0.2 vs 0.2
    assert math.isclose(coarse_kl(p, q), want)
    s = ref_stats([(p, q, "a"), (p, p, None)])
    assert s.positions == 2 and s.top1_agree == 1.0 and math.isclose(s.kl, want / 2)


def test_verdict_bands():
    from regraft.verify.compare import PairStats

    noise = PairStats(positions=8, max_diff=0.0)
    assert decide(PairStats(positions=8, max_diff=0.0), noise)[0] == "no-effect"
    assert decide(PairStats(positions=8, max_diff=0.5, top1_agree=0.5), noise)[0] == "applied"
    assert decide(PairStats(positions=8, max_diff=0.05), noise)[0] == "unknown"  # between floor and clear
    noisy = PairStats(positions=8, max_diff=0.1)  # the server's own repeat noise raises the floor to 0.3
    assert decide(PairStats(positions=8, max_diff=0.25), noisy)[0] == "no-effect"
    assert decide(PairStats(positions=0), noise)[0] == "unknown"


def test_wire_formats():
    c = parse_completion_logprobs({"tokens": ["a", "b"], "token_logprobs": [-0.1, None],
                                   "top_logprobs": [{"a": -0.1, "c": -3}, None]})
    assert c[0].top == {"a": -0.1, "c": -3} and c[1].logprob is None and c[1].top == {}
    assert parse_completion_logprobs(None) is None
    assert parse_completion_logprobs({"tokens": ["a"], "token_logprobs": [None], "top_logprobs": [None]}) is None
    ch = parse_chat_logprobs({"content": [{"token": "token_id:5", "logprob": -0.5,
                                           "top_logprobs": [{"token": "token_id:5", "logprob": -0.5}]}]})
    assert ch[0].token == "token_id:5" and ch[0].argmax == "token_id:5"
    assert parse_chat_logprobs({"content": None}) is None
