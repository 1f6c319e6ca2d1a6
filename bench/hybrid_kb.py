"""The "kb" routing task: a knowledge base with gaps, a small model that reads evidence, a master that remembers.

Why: on the zoo's arithmetic chats the small and the master fail on mostly the same items and the small model's
confidence is flat (bench/results/hybrid.md, first runs), so no router can show much. The hybrid exists for a
different situation, and this task builds it deterministically and cheaply on CPU:

- a world of 300 entities in 75 families that share a 3-letter stem (``bak`` -> ``baka bake baki bako``), each
  with a secret 3-letter code; questions are ``code of baka?`` and the answer is the code;
- the knowledge base (a real regraft store: ``regraft.hybrid.index.index_docs``, the default MiniLM embedder,
  LanceDB) holds one document ``code of baka is qzr.`` for 80% of the entities: for the other 20% the best hit is
  a sibling's document (``code of bake is ...``), a near miss that scores almost as high;
- the small model (48x2, ~70k parameters) is fine-tuned on fresh random entities to answer from one evidence line
  rendered exactly as the hybrid renders it; in 20% of its training items the line is a sibling's, with the true
  (unknowable) code as the target, and 30% of its items are the answerability question the hybrid asks
  (``regraft.hybrid.signals.answerability_prompt``) with a yes/no target;
- the master (64x2) never sees evidence (policy ``master_evidence: false``); it is trained on the 300 codes for
  few enough steps (500) that it does not remember all of them;
- dev (100 entities, for `regraft calibrate`) and test (200) are stratified: each holds 20% entities missing from
  the knowledge base.

So the small model is right when the evidence holds the entity and wrong otherwise, the master is right when it
remembers: they fail on different items. By construction the entity's own name is the key, so the lexical
sufficient-context check (``context_coverage``) is close to a perfect router here; real questions paraphrase, which is
what the model-based checks and the trained router are for. Everything is a pure function of the seeds; models are cached under
bench/.cache/hybrid.
"""

from __future__ import annotations

import json
import random
import sys
import time
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KB_SEED = 4242
N_FAMILIES = 75
COVERAGE = 0.8
SMALL_SHAPE = {"arch": "qwen3", "hidden": 48, "layers": 2, "heads": 2, "kv_heads": 1, "ffn": 128}
MASTER_SHAPE = {"arch": "qwen3", "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 256}
MAX_POS = 256
CONS, VOWS, LET = "bcdfghjklmnprstvz", "aeio", "abcdefghijklmnopqrstuvwxyz"


@lru_cache(maxsize=1)
def world() -> dict:
    rng = random.Random(KB_SEED)
    stems: list[str] = []
    while len(stems) < N_FAMILIES:
        s = rng.choice(CONS) + rng.choice("aeiou") + rng.choice(CONS)
        if s not in stems:
            stems.append(s)
    ents = [s + v for s in stems for v in VOWS]
    codes = {e: "".join(rng.choice(LET) for _ in range(3)) for e in ents}
    order = list(range(len(ents)))
    rng.shuffle(order)
    covered = set(order[: int(COVERAGE * len(ents))])
    # dev / test stratified by coverage, so both hold the same 20% of entities missing from the knowledge base
    cov = [i for i in order if i in covered]
    gap = [i for i in order if i not in covered]
    n_dev_cov, n_dev_gap = len(cov) // 3, len(gap) // 3
    dev = sorted(cov[:n_dev_cov] + gap[:n_dev_gap])
    test = sorted(cov[n_dev_cov:] + gap[n_dev_gap:])
    return {"entities": ents, "codes": codes, "covered": {ents[i] for i in covered},
            "doc": {e: f"e{i:03d}.md" for i, e in enumerate(ents)},
            "dev": [ents[i] for i in dev], "test": [ents[i] for i in test]}


def question(e: str) -> str:
    return f"code of {e}?"


def doc_text(e: str, code: str) -> str:
    return f"code of {e} is {code}."


def items(split: str) -> list[tuple[str, str]]:
    w = world()
    return [(question(e), w["codes"][e]) for e in w[split]]


def write_docs(d: Path) -> Path:
    w = world()
    d.mkdir(parents=True, exist_ok=True)
    for e in w["entities"]:
        if e in w["covered"]:
            (d / w["doc"][e]).write_text(doc_text(e, w["codes"][e]))
    return d


# -- training data rendered exactly as the hybrid renders prompts --------------------------------------------
POLICY = {
    "system_prompt": "", "send_draft": False, "master_evidence": False, "retrieval_k": 1,
    "evidence_token_budget": 100, "small_max_tokens": 6, "master_max_tokens": 6, "retries": 1, "max_n": 8,
    "answerability_check": True, "sample_k": 4, "sample_temperature": 1.0,
    "escalate_if": {"retrieval_score_below": None, "mean_logprob_below": None, "tool_failures_at_least": None,
                    "answer_chars_below": 1, "finish_reason_length": False, "phrases": []},
}


def _renderer():
    from regraft.hybrid.backends import Backend
    from regraft.hybrid.contract import Side
    from regraft.hybrid.orchestrator import Hybrid
    from regraft.hybrid.policy import policy_from_dict

    h = Hybrid(Backend("http://127.0.0.1:9/v1", "x"), None, policy=policy_from_dict(POLICY))
    side = Side("small", "", "x")
    return h, side


def _fresh_entity(rng) -> tuple[str, str]:
    stem = rng.choice(CONS) + rng.choice("aeiou") + rng.choice(CONS)
    a, b = rng.sample(VOWS, 2)
    return stem + a, stem + b


def small_example(rng, h, side) -> tuple[list[dict], str]:
    """(messages as the hybrid sends them, target) for the small model's fine-tuning."""
    from regraft.hybrid.signals import answerability_prompt
    from regraft.hybrid.store import Hit

    e, sib = _fresh_entity(rng)
    code = "".join(rng.choice(LET) for _ in range(3))
    match = rng.random() >= 0.2
    shown, shown_code = (e, code) if match else (sib, "".join(rng.choice(LET) for _ in range(3)))
    hit = Hit("x", f"e{rng.randrange(300):03d}.md", doc_text(shown, shown_code), 0.9)
    if rng.random() < 0.3:
        msgs = [{"role": "user", "content": answerability_prompt(question(e))}]
        target = "yes" if match else "no"
    else:
        msgs = [{"role": "user", "content": question(e)}]
        target = code
    out, _, _ = h.build_messages(msgs, [hit], side, 6)
    return out, target


def master_example(rng) -> tuple[list[dict], str]:
    w = world()
    e = rng.choice(w["entities"])
    return [{"role": "user", "content": question(e)}], w["codes"][e]


def train(shape: dict, example, steps: int, lr: float, seed: int, batch: int):
    import torch
    from transformers import AutoModelForCausalLM

    from bench.zoo import world as zw
    from bench.zoo.models import make_config

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = make_config(shape)
    cfg.max_position_embeddings = MAX_POS
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tok = zw.hf_tokenizer()
    tok.model_max_length = MAX_POS
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    losses = []
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        rows = []
        for _ in range(batch):
            msgs, target = example(rng)
            p = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
            if isinstance(p, dict) or hasattr(p, "input_ids"):
                p = p["input_ids"]
            rows.append((list(p), zw.encode(target) + [zw.IM_END_ID]))
        L = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((batch, L), zw.PAD_ID)
        labels = torch.full((batch, L), -100)
        mask = torch.zeros((batch, L), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p): len(p) + len(c)] = torch.tensor(c)
            mask[i, : len(p) + len(c)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"  step {step}/{steps} loss {sum(losses[-20:]) / len(losses[-20:]):.3f} "
                  f"({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    model.eval()
    return model, tok, {"steps": steps, "loss_start": sum(losses[:20]) / 20, "loss_end": sum(losses[-20:]) / 20,
                        "seconds": time.time() - t0}


def build_pair(cache: Path, small_steps: int, master_steps: int) -> tuple[Path, Path]:
    out = []
    for name, shape, steps, lr, batch in (("small", SMALL_SHAPE, small_steps, 3e-3, 32),
                                          ("master", MASTER_SHAPE, master_steps, 3e-3, 64)):
        d = cache / f"kb-{name}-{shape['hidden']}x{shape['layers']}-{steps}"
        if not (d / "config.json").is_file():
            print(f"training the kb {name} model ({steps} steps)", file=sys.stderr, flush=True)
            if name == "small":
                h, side = _renderer()
                example = lambda rng: small_example(rng, h, side)  # noqa: E731
            else:
                example = master_example
            m, tok, stats = train(shape, example, steps, lr, seed=11 if name == "small" else 12, batch=batch)
            tmp = d.with_name(d.name + ".tmp")
            m.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "train.json").write_text(json.dumps({**stats, "shape": shape}))
            tmp.rename(d)
            print(f"trained {name}: {stats}", file=sys.stderr, flush=True)
        out.append(d)
    return out[0], out[1]
