"""The synthetic world: tokenizer round trips, task splits, absence of the tasks from pretraining."""

from __future__ import annotations

import random

import pytest

from bench.zoo import load_task, world

pytestmark = pytest.mark.zoo


def test_tokenizer_is_character_level_with_atomic_specials():
    text = "<|im_start|>user\nrev: Abc 7+3<|im_end|>\n<|endoftext|>"
    ids = world.encode(text)
    assert ids[0] == world.IM_START_ID and world.IM_END_ID in ids and ids[-1] == world.PAD_ID
    assert len(ids) == len("user\nrev: Abc 7+3") + 2 + 1 + 1
    assert world.decode(ids) == text
    assert max(ids) < world.VOCAB_SIZE
    hf = world.hf_tokenizer()
    assert hf("T: abc = ")["input_ids"] == world.encode("T: abc = ")


def test_task_a_splits_are_disjoint_and_correct():
    a = load_task("A")
    assert (len(a.train), len(a.dev), len(a.test)) == (2000, 300, 500)
    ins = [set(e.prompt for e in s) for s in (a.train, a.dev, a.test)]
    assert not (ins[0] & ins[1]) and not (ins[0] & ins[2]) and not (ins[1] & ins[2])
    c = world.world()["cipher"]
    assert all(k != v for k, v in c.items()) and sorted(c.values()) == sorted(c)
    e = a.test[0]
    s = e.prompt[3:-3]
    assert e.gold == world.task_a_answer(s) and len(s) == 5
    assert world.task_a_answer(s) == "".join(c[ch] for ch in s)


def test_tasks_b_and_c_shapes():
    b, c = load_task("B"), load_task("C")
    assert len(b.train) == 450 and len(b.dev) + len(b.test) == 150
    assert all(e.prompt.startswith("q: ") for e in b.test) and not any(e.prompt.startswith("q: ") for e in b.train)
    assert all(e.eos == world.IM_END and e.gold.startswith("<< ") for e in c.test)


def test_tasks_are_absent_from_pretraining():
    rng = random.Random(0)
    docs = [world.pretrain_doc(rng) for _ in range(3000)] + [world.chat_doc(rng) for _ in range(2000)]
    new_ents = {e for e, _, _ in world.world()["new_facts"]}
    assert not any(d.startswith("T:") for d in docs)
    assert not any("<< " in d for d in docs)
    assert not any(w.strip(".?'s") in new_ents for d in docs for w in d.split())


def test_world_is_seeded():
    assert world.generic_texts(20) == world.generic_texts(20)
    assert world.generic_texts(20, seed=1) != world.generic_texts(20)
