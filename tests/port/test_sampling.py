"""Prompts written by the source+adapter itself (`prompts.from_samples`, `distill_adapter(sample_frac=...)`):
nucleus sampling, the seeds' frame kept, and — on the zoo — prompts in the format the adapter was trained on."""

from __future__ import annotations

import pytest
import torch

from regraft.port import prompts as P
from regraft.port.teacher import LocalTeacher, StreamedTeacher, _pick

from tests import factories as T

SEEDS = ["q:abc=", "q:hello=", "q:zzyx=", "q:mnop=", "q:qrstu="]


def test_pick_is_argmax_at_temperature_zero_and_stays_in_the_nucleus():
    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4000))
    assert _pick(logits).tolist() == [0] * 4000
    picks = _pick(logits, 1.0, 0.8, g)  # nucleus {0, 1}: 0.5 + 0.3 reaches 0.8
    assert set(picks.tolist()) == {0, 1}
    assert abs(float((picks == 0).float().mean()) - 0.5 / 0.8) < 0.03
    picks = _pick(logits, 1.0, 1.0, g)
    assert set(picks.tolist()) == {0, 1, 2, 3}
    assert _pick(logits[:5], 1.0, 1e-6, g).tolist() == [0] * 5  # a tiny nucleus is the argmax


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("sampling")
    S = T.make_dense(d / "S")
    T.save_tokenizer(S)
    A = T.random_adapter(S, d / "A", std=0.5)
    return S, A


def test_sampled_prompts_keep_the_frame_and_are_deterministic(source):
    S, A = source
    tok = T.tokenizer()
    t = LocalTeacher(S, A, tok)
    out = P.from_samples(t, SEEDS, 24, seed=1, exclude={"q:ab="}, rounds=8)
    assert len(out) == 24 and len(set(out)) == 24 and "q:ab=" not in out
    for p in out:
        mid = p[2:-1]
        assert p.startswith("q:") and p.endswith("=") and mid and "=" not in mid and len(mid) <= 15
        assert not any(s in mid for s in tok.all_special_tokens)
    assert P.from_samples(t, SEEDS, 24, seed=1, exclude={"q:ab="}, rounds=8) == out
    assert P.from_samples(t, SEEDS, 24, seed=2, rounds=8) != out
    # the streamed teacher samples the same tokens from the same generator state
    st = StreamedTeacher(S, A, tok)
    assert P.from_samples(st, SEEDS, 24, seed=1, exclude={"q:ab="}, rounds=8) == out


def test_distill_samples_part_of_its_pool_and_tops_up_from_seeds(source, tmp_path):
    from regraft.port.methods.distill.training import distill_adapter

    S, A = source
    Tg = T.make_dense(tmp_path / "T", "qwen3", seed=3, hidden_size=48, num_attention_heads=6)
    T.save_tokenizer(Tg)
    rep = distill_adapter(A, S, Tg, tmp_path / "out", seeds=SEEDS, n_prompts=16, sample_frac=0.5, init=None,
                          steps=4, eval_every=2, show_progress=False)
    pr = rep.details["prompts"]
    assert pr["pool"] == 32 and 0 < pr["sampled"] <= 16 and pr["sample_frac"] == 0.5
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
