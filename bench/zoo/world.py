"""The synthetic world: one character-level tokenizer, a pretraining mixture and tasks A/B/C.

Everything is a pure function of a seed. Strings are lower-case ASCII; upper case is only used by
Task C's style, so the style is something the base models have never produced.

* Pretraining documents: ``copy: abc > abc``, ``rev: abc > cba``, ``sort: cab > abc``,
  ``mod 7: 3+5 = 1``, fact sentences about a fixed pool of entities in 4 templates, and PCFG sentences.
* Task A (procedural): ``T: <5 letters> = `` -> the letters under a secret substitution cipher
  (a derangement). ``T:`` never occurs in pretraining. (lora_transfer.md section 7.1 asks for 5-10
  letters, cipher *then reversed*; models small enough for the 2-core smoke budget did not learn
  variable-offset copying in time, so Task A keeps the fixed-offset copy + MLP relabelling; set
  TASK_A_REVERSE / TASK_A_LEN to get the harder variant.)
* Task B (new facts): 150 new entities with one attribute each; train on templates 0-2, dev/test on
  the held-out template 3 (``q: color of zup? a: `` -> value).
* Task C (chat format): a ChatML user turn with a pretraining-style command; the assistant answers
  in a fixed style ``<< ANSWER >>`` (upper case). T1 learns ChatML with plain answers, never this style.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from functools import lru_cache

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHARS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,:;=?!+-*%<>'\n")
VOCAB_SIZE = 96  # model embedding rows; tokenizer uses len(SPECIALS) + len(CHARS) = 84 of them
EOT, IM_START, IM_END = SPECIALS
PAD_ID, IM_START_ID, IM_END_ID = 0, 1, 2
WORLD_SEED = 1234  # fixes the cipher, the fact pools and the test sets; model seeds are separate

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Example:
    prompt: str
    gold: str  # without the end token
    eos: str = EOT  # the token that must follow gold


@dataclass(frozen=True)
class Task:
    name: str
    train: list
    dev: list
    test: list


# ---------------------------------------------------------------- tokenizer
QWEN_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                          r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def _byte_level(ch: str) -> str:
    """GPT-2/Qwen byte-level symbol of an ASCII character (space -> 'Ġ', newline -> 'Ċ')."""
    b = ord(ch)
    assert b <= 126, ch  # the world is ASCII; bytes 0-32 map to chr(256 + b) in the byte-level alphabet
    return ch if b >= 33 else chr(256 + b)


@lru_cache(maxsize=1)
def raw_tokenizer():
    """A `tokenizers.Tokenizer` built exactly like transformers' Qwen2Tokenizer (NFC, Qwen split regex,
    byte-level, BPE) but with a character vocabulary and no merges: every character is one token and the
    three specials are atomic. `AutoTokenizer` rebuilds the same pipeline from the saved vocab, so both
    paths give identical ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({_byte_level(c): len(SPECIALS) + i for i, c in enumerate(CHARS)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.decoder = decoders.ByteLevel()
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


def hf_tokenizer():
    """The tokenizer as transformers sees it (eos ``<|im_end|>``, pad ``<|endoftext|>``, ChatML template)."""
    from transformers import PreTrainedTokenizerFast

    t = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer(), eos_token=IM_END, pad_token=EOT, model_max_length=128
    )
    t.chat_template = CHAT_TEMPLATE
    return t


def encode(text: str) -> list[int]:
    return raw_tokenizer().encode(text, add_special_tokens=False).ids


def encode_batch(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in raw_tokenizer().encode_batch(texts, add_special_tokens=False)]


def decode(ids) -> str:
    return raw_tokenizer().decode(list(ids), skip_special_tokens=False)


# ---------------------------------------------------------------- world constants
LETTERS = string.ascii_lowercase
ATTRS = ["color", "city", "pet"]
DETS = ["the", "a", "every", "some"]
ADJS = ["big", "small", "red", "old", "quiet", "fast", "green", "dark"]
NOUNS = ["cat", "dog", "bird", "king", "tree", "boat", "girl", "fox", "river", "stone"]
VERBS = ["sees", "likes", "finds", "keeps", "hears", "moves", "takes"]
PREPS = ["near", "under", "behind", "with"]
FACT_TEMPLATES = [
    ("the {a} of {e} is ", "{v}."),
    ("{e}'s {a} is ", "{v}."),
    ("{e} has {a} ", "{v}."),
    ("q: {a} of {e}? a: ", "{v}"),
]


def _pseudo_words(rng: random.Random, n: int, taken: set, length=(3, 4)) -> list[str]:
    cons, vows = "bcdfghjklmnprstvz", "aeiou"
    out = []
    while len(out) < n:
        L = rng.randint(*length)
        w = "".join(rng.choice(cons) if i % 2 == 0 else rng.choice(vows) for i in range(L))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@lru_cache(maxsize=1)
def world():
    """The fixed world: cipher, value pools, pretraining facts and Task B's new facts."""
    rng = random.Random(WORLD_SEED)
    while True:  # a derangement, so copying or reversing never scores on Task A
        perm = list(LETTERS)
        rng.shuffle(perm)
        if all(a != b for a, b in zip(LETTERS, perm)):
            break
    cipher = dict(zip(LETTERS, perm))
    taken = set(ADJS + NOUNS + VERBS + DETS + PREPS + ATTRS)
    values = {a: _pseudo_words(rng, 40, taken, (3, 3)) for a in ATTRS}
    ents = _pseudo_words(rng, 300 + 150, taken, (4, 4))
    old = [(e, rng.choice(ATTRS)) for e in ents[:300]]
    old_facts = [(e, a, rng.choice(values[a])) for e, a in old]
    new = [(e, rng.choice(ATTRS)) for e in ents[300:]]
    new_facts = [(e, a, rng.choice(values[a])) for e, a in new]
    return {"cipher": cipher, "values": values, "old_facts": old_facts, "new_facts": new_facts}


# ---------------------------------------------------------------- pretraining mixture
def _letters(rng, lo=3, hi=8):
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


COMMAND_LEN = (5, 5)  # fixed length: tiny 2-layer models learn fixed-offset copying fast, variable-offset not


def _command(rng) -> tuple[str, str]:
    """A pretraining-style command and its answer (used raw in pretraining and inside chats)."""
    k = rng.randrange(4)
    if k == 3:
        m = rng.choice([7, 10])
        x, y, op = rng.randrange(m), rng.randrange(m), rng.choice("+-*")
        val = {"+": x + y, "-": x - y, "*": x * y}[op] % m
        return f"mod {m}: {x}{op}{y} = ", str(val)
    s = _letters(rng, *COMMAND_LEN)
    name, out = [("copy", s), ("rev", s[::-1]), ("sort", "".join(sorted(s)))][k]
    return f"{name}: {s} > ", out


def _sentence(rng) -> str:
    def np_():
        adj = rng.choice(ADJS) + " " if rng.random() < 0.5 else ""
        return f"{rng.choice(DETS)} {adj}{rng.choice(NOUNS)}"

    s = f"{np_()} {rng.choice(VERBS)} {np_()}"
    if rng.random() < 0.3:
        s += f" {rng.choice(PREPS)} {np_()}"
    return s + "."


def _fact(rng, facts) -> str:
    e, a, v = rng.choice(facts)
    p, g = rng.choice(FACT_TEMPLATES)
    return p.format(a=a, e=e) + g.format(v=v)


def pretrain_doc(rng: random.Random) -> str:
    """One document of the generic mixture (ends with ``<|endoftext|>``)."""
    r = rng.random()
    if r < 0.6:
        p, g = _command(rng)
        doc = p + g
    elif r < 0.8:
        doc = _fact(rng, world()["old_facts"])
    else:
        doc = _sentence(rng)
    return doc + EOT


def chat(user: str, answer: str | None = None) -> str:
    s = f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    return s if answer is None else s + answer + IM_END


def chat_doc(rng: random.Random) -> str:
    """T1's instruct data: ChatML with plain answers (no Task C style), mixed with generic text."""
    if rng.random() < 0.5:
        return pretrain_doc(rng)
    p, g = _command(rng)
    return chat(p.rstrip(" >=").rstrip(), g)


def generic_texts(n: int = 400, seed: int = 777) -> list[str]:
    """Held-out generic text for side-effect NLL (same distribution as pretraining, other seed)."""
    rng = random.Random(seed * 1_000_003 + 17)
    return [pretrain_doc(rng) for _ in range(n)]


# ---------------------------------------------------------------- tasks
TASK_A_LEN = (5, 5)
TASK_A_REVERSE = False


def task_a_answer(s: str) -> str:
    c = world()["cipher"]
    out = "".join(c[ch] for ch in s)
    return out[::-1] if TASK_A_REVERSE else out


def _task_a(sizes=(2000, 300, 500)) -> Task:
    rng = random.Random(WORLD_SEED + 1)
    seen, splits = set(), []
    for n in sizes:
        items = []
        while len(items) < n:
            s = _letters(rng, *TASK_A_LEN)
            if s in seen:
                continue
            seen.add(s)
            items.append(Example(f"T: {s} = ", task_a_answer(s)))
        splits.append(items)
    return Task("A", *splits)


def _task_b() -> Task:
    facts = world()["new_facts"]
    train = []
    for e, a, v in facts:
        for p, g in FACT_TEMPLATES[:3]:
            train.append(Example(p.format(a=a, e=e), g.format(v=v)))
    random.Random(WORLD_SEED + 2).shuffle(train)
    p3, g3 = FACT_TEMPLATES[3]
    held = [Example(p3.format(a=a, e=e), g3.format(v=v)) for e, a, v in facts]
    return Task("B", train, held[:30], held[30:])


TASK_C_UPPER = False  # True: the answer in upper case (tokens no base ever produced; tiny LoRAs failed it)


def _task_c(sizes=(2000, 300, 500)) -> Task:
    rng = random.Random(WORLD_SEED + 3)
    seen, splits = set(), []
    for n in sizes:
        items = []
        while len(items) < n:
            p, g = _command(rng)
            user = p.rstrip(" >=").rstrip()
            if user in seen:
                continue
            seen.add(user)
            items.append(Example(chat(user), f"<< {g.upper() if TASK_C_UPPER else g} >>", IM_END))
        splits.append(items)
    return Task("C", *splits)


TASKS = {"A": _task_a, "B": _task_b, "C": _task_c}


def load_task(name: str) -> Task:
    """Task ``name`` ("A", "B" or "C") with train/dev/test lists of `Example(prompt, gold, eos)`, in the
    current world settings (see `configure`)."""
    if name not in TASKS:
        from regraft.errors import InputError

        raise InputError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return _load_task(name, COMMAND_LEN, TASK_A_LEN, TASK_A_REVERSE, TASK_C_UPPER)


@lru_cache(maxsize=None)
def _load_task(name, *_settings) -> Task:
    return TASKS[name]()


# ---------------------------------------------------------------- world settings (per tier)
DEFAULT_SETTINGS = {"command_len": [5, 5], "task_a_len": [5, 5], "task_a_reverse": False}


def settings() -> dict:
    """The current world settings (the tier's ``world`` entry; `DEFAULT_SETTINGS` when it has none)."""
    return {"command_len": list(COMMAND_LEN), "task_a_len": list(TASK_A_LEN), "task_a_reverse": TASK_A_REVERSE}


def configure(command_len=None, task_a_len=None, task_a_reverse=None) -> dict:
    """Set the world settings: letter-string length of the pretraining commands (copy/rev/sort, also used
    inside chats and Task C) and Task A's input length and reversal. Unset values go back to the defaults.
    `bench.zoo.build.tier_config` calls this with the tier's ``world`` entry. Returns the settings."""
    global COMMAND_LEN, TASK_A_LEN, TASK_A_REVERSE
    d = DEFAULT_SETTINGS
    COMMAND_LEN = tuple(command_len if command_len is not None else d["command_len"])
    TASK_A_LEN = tuple(task_a_len if task_a_len is not None else d["task_a_len"])
    TASK_A_REVERSE = bool(task_a_reverse if task_a_reverse is not None else d["task_a_reverse"])
    return settings()


def task_doc(ex: Example) -> str:
    return ex.prompt + ex.gold + ex.eos
