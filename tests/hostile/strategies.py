"""Hypothesis strategies for hostile and broken inputs: safetensors files, adapters, model folders, templates.

Every strategy produces plain data (bytes, dicts, strings); ``materialise_*`` helpers write it to a folder.
Large declared tensors are written as sparse files (``truncate``), so a case can claim gigabytes cheaply.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from regraft import catalog
from regraft.inspection.safetensors_header import DTYPE_BYTES

KNOWN_DTYPES = sorted(DTYPE_BYTES)
BAD_DTYPES = ["", "F8", "float32", "bf16", "BF16 ", "Q4_K", "F128", "I128"]
def rare(n: int):
    """True about once in n+1 draws (hypothesis favours small integers, so ``integers(0, n) == 0`` is not rare)."""
    return st.sampled_from([False] * n + [True])


HUGE = [2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]

# -- generic JSON values ------------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 8), st.integers(-(2**70), 2**70), st.sampled_from(HUGE + [-1, 0]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324, 0.5]),
    st.text(max_size=12), st.sampled_from(["", "0", "-1", "1e9", "NaN", "auto", "__class__", "{{7*7}}", "../x"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def dumps(doc, mode: str = "plain") -> str:
    """JSON text; Python's json accepts NaN/Infinity, so hostile files may contain them."""
    text = json.dumps(doc, allow_nan=True, ensure_ascii=mode == "ascii", indent=1 if mode == "indent" else None)
    return text


@st.composite
def json_text_mutation(draw, text: str) -> str:
    """Damage JSON text: truncate, splice garbage, huge integers, deep nesting, BOM, invalid escapes."""
    kind = draw(st.sampled_from(["none"] * 10 + ["truncate", "splice", "bigint", "deep", "bom", "escape", "dupkeys"]))
    if kind == "none" or not text:
        return text
    if kind == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "splice":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(["\x00", "}", "]", ",", "\"", "\\", "\ud800", "NaN", "-", "1e999"]))\
            + text[at:]
    if kind == "bigint":
        return text.replace(":", ": " + "9" * draw(st.integers(4290, 5000)) + ", \"_x\":", 1) if ":" in text else text
    if kind == "deep":
        n = draw(st.integers(500, 200_000))
        return text.replace(":", ": " + "[" * n + "]" * n + ", \"_y\":", 1) if ":" in text else "[" * n + "]" * n
    if kind == "bom":
        return "\ufeff" + text
    if kind == "escape":
        return text.replace("\"", "\"\\ud800", 1)
    return text.replace("{", "{\"a\": 1, \"a\": 2, ", 1)


# -- safetensors files ------------------------------------------------------------------------------------
@dataclass
class StFile:
    blob: bytes  # what is written
    size: int  # file size after a sparse truncate (>= len(blob) extends with zeros; < truncates)

    def write(self, path: Path) -> Path:
        with open(path, "wb") as f:
            f.write(self.blob)
            f.truncate(self.size)
        return path


def _nbytes(dtype: str, shape: list[int]) -> int:
    count = 1
    for d in shape:
        count *= d
    if dtype == "F4":
        return (count + 1) // 2
    if dtype in ("F6_E2M3", "F6_E3M2"):
        return (count * 6 + 7) // 8
    return count * DTYPE_BYTES.get(dtype, 1)


shapes = st.one_of(
    st.lists(st.integers(0, 4096), min_size=0, max_size=3),
    st.lists(st.integers(0, 9), min_size=0, max_size=6),
    st.lists(st.one_of(st.integers(-5, 5), st.sampled_from(HUGE), st.booleans(), st.floats(), st.text(max_size=2)),
             max_size=3),
    json_values,
)


@st.composite
def tensor_entries(draw, names=None):
    """{name: {dtype, shape, data_offsets}} with mostly-consistent spans and a data size."""
    n = draw(st.integers(0, 8))
    doc: dict = {}
    offset = 0
    pool = names if names is not None else st.text(min_size=0, max_size=24)
    for _ in range(n):
        name = draw(pool)
        dtype = draw(st.one_of(st.sampled_from(KNOWN_DTYPES), st.sampled_from(KNOWN_DTYPES),
                               st.sampled_from(BAD_DTYPES), json_values))
        shape = draw(st.one_of(st.lists(st.integers(0, 512), max_size=3), shapes))
        good_shape = isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
        size = _nbytes(dtype, shape) if good_shape and isinstance(dtype, str) else draw(st.integers(0, 64))
        span = draw(st.sampled_from(["exact"] * 6 + ["overlap", "gap", "oob", "reversed", "huge", "short", "garbage",
                                                     "negative", "floats"]))
        begin, end = offset, offset + size
        if span == "overlap" and offset:
            begin = max(0, offset - draw(st.integers(1, offset)))
            end = begin + size
        elif span == "gap":
            begin += draw(st.integers(1, 64))
            end = begin + size
        elif span == "oob":
            end += draw(st.integers(1, 2**40))
        elif span == "reversed":
            begin, end = end + 1, begin
        elif span == "huge":
            begin, end = draw(st.sampled_from(HUGE)), draw(st.sampled_from(HUGE))
        elif span == "short":
            end = max(begin, end - draw(st.integers(1, 8)))
        elif span == "negative":
            begin = -draw(st.integers(1, 100))
        offsets = draw(json_values) if span == "garbage" else [float(begin), float(end)] if span == "floats" \
            else [begin, end]
        entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        if draw(rare(9)):
            entry = draw(st.one_of(json_values, st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets",
                                                                                 "extra"]), json_values)))
        doc[name] = entry
        if isinstance(end, int) and 0 <= end < 2**40:
            offset = max(offset, end)
    return doc, offset


@st.composite
def metadata(draw):
    return draw(st.one_of(st.none(), st.none(), st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3),
                          st.just({"format": "pt"}), json_values))


@st.composite
def safetensors_files(draw, names=None):
    """A safetensors file: structured (valid or subtly broken header) or raw bytes."""
    kind = draw(st.sampled_from(["structured"] * 8 + ["raw", "prefix-only"]))
    if kind == "raw":
        blob = draw(st.binary(max_size=256))
        return StFile(blob, len(blob))
    if kind == "prefix-only":
        n = draw(st.one_of(st.sampled_from(HUGE + [0, 1, 7, 8, 100_000_001]), st.integers(0, 2**64 - 1)))
        blob = struct.pack("<Q", n % 2**64)[: draw(st.integers(0, 8))]
        return StFile(blob, len(blob) + draw(st.integers(0, 32)))
    doc, data_size = draw(tensor_entries(names))
    meta = draw(metadata())
    if meta is not None:
        doc["__metadata__"] = meta
    text = draw(json_text_mutation(dumps(doc, draw(st.sampled_from(["plain", "ascii", "indent"])))))
    header = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        header += b" " * ((8 - len(header) % 8) % 8)
    if draw(rare(19)):  # raw byte damage
        at = draw(st.integers(0, max(0, len(header) - 1)))
        header = header[:at] + draw(st.binary(min_size=1, max_size=4)) + header[at + 1:]
    n = len(header)
    prefix_mode = draw(st.sampled_from(["exact"] * 24 + ["plus", "minus", "huge", "random"]))
    if prefix_mode == "plus":
        n += draw(st.integers(1, 1000))
    elif prefix_mode == "minus":
        n = max(0, n - draw(st.integers(1, 1000)))
    elif prefix_mode == "huge":
        n = draw(st.sampled_from(HUGE + [100_000_000, 100_000_001]))
    elif prefix_mode == "random":
        n = draw(st.integers(0, 2**64 - 1))
    blob = struct.pack("<Q", n % 2**64) + header
    size = len(blob) + data_size + draw(st.sampled_from([0, 0, 0, 1, -1, 7, 2**20]))
    return StFile(blob, max(0, size))


# -- adapters ---------------------------------------------------------------------------------------------
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj", "mlp.experts.{e}.gate_proj", "mlp.experts.{e}.down_proj",
           "mlp.experts.{e}.up_proj", "mlp.experts", "mlp.experts.base_layer", "mlp.gate", "mlp.shared_expert.up_proj",
           "linear_attn.in_proj_qkvz", "self_attn.q_norm", "input_layernorm", "embed_tokens", "lm_head"]
SUFFIXES = [".lora_A.weight", ".lora_B.weight", ".lora_B.bias", ".lora_A.bias", ".lora_embedding_A",
            ".lora_embedding_B", ".lora_magnitude_vector.weight", ".lora_magnitude_vector", ".base_layer.weight",
            ".weight", ".bias", ".token_adapter.trainable_tokens_delta", ".lora_A.default.weight", ""]
PREFIXES = ["base_model.model.model.layers.{i}.", "base_model.model.model.language_model.layers.{i}.",
            "model.layers.{i}.", "base_model.model.", "base_model.model.model.", "", "layers.{i}."]


@st.composite
def adapter_tensor_names(draw):
    if draw(rare(7)):
        return draw(st.text(max_size=40))
    prefix = draw(st.sampled_from(PREFIXES)).replace(
        "{i}", str(draw(st.one_of(st.integers(0, 100), st.sampled_from([10**6, 10**30, 2**63])))))
    module = draw(st.sampled_from(MODULES)).replace("{e}", str(draw(st.integers(0, 300))))
    return prefix + module + draw(st.sampled_from(SUFFIXES))


@st.composite
def adapter_configs(draw):
    """adapter_config.json: plausible values with hostile ones mixed in."""
    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": draw(st.sampled_from(list(catalog.model_ids()) + ["", "../../etc", "x"]))}
    keys = ["peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern",
            "target_modules", "target_parameters", "modules_to_save", "layers_to_transform", "lora_bias",
            "base_model_name_or_path", "revision", "layers_pattern", "trainable_token_indices", "task_type",
            "peft_version", "fan_in_fan_out", "unknown_future_key"]
    for k in draw(st.lists(st.sampled_from(keys), max_size=6)):
        cfg[k] = draw(st.one_of(json_values, _config_value(k)))
    if draw(rare(15)):
        return draw(json_values)
    return cfg


def _config_value(key: str):
    return {
        "r": st.one_of(st.integers(-2, 4096), st.sampled_from(HUGE)),
        "lora_alpha": st.one_of(st.integers(-2, 4096), st.floats()),
        "rank_pattern": st.dictionaries(st.sampled_from(["q_proj", ".*", "(a+)+$", "[", "layers.0.self_attn.q_proj",
                                                         "((((((((((a*)*)*)*)*)*)*)*)*)*)*b"]),
                                        st.one_of(st.integers(-1, 64), json_values), max_size=3),
        "alpha_pattern": st.dictionaries(st.sampled_from(["q_proj", ".*", "(", "o_proj"]),
                                         st.one_of(st.integers(-1, 64), st.floats(), json_values), max_size=3),
        "target_modules": st.one_of(st.lists(st.sampled_from(["q_proj", "k_proj", "experts", ""]), max_size=4),
                                    st.sampled_from(["all-linear", ".*q_proj", "("]), st.lists(json_values, max_size=2)),
        "target_parameters": st.lists(st.one_of(st.sampled_from(["mlp.experts.gate_up_proj", "mlp.experts.down_proj",
                                                                 "gate_up_proj", ""]), json_values), max_size=3),
        "modules_to_save": st.lists(st.one_of(st.sampled_from(["lm_head", "embed_tokens", "score"]), json_values),
                                    max_size=3),
        "layers_to_transform": st.one_of(st.integers(-1, 100), st.lists(st.integers(-1, 100), max_size=4),
                                         st.lists(json_values, max_size=2)),
        "peft_type": st.sampled_from(["LORA", "lora", "LOHA", "", "IA3"]),
    }.get(key, json_values)


@st.composite
def adapters(draw):
    """(adapter_config.json text, safetensors file) with PEFT-like tensor names."""
    cfg_text = draw(json_text_mutation(dumps(draw(adapter_configs()))))
    weights = draw(safetensors_files(names=adapter_tensor_names()))
    if draw(rare(3)):
        weights = draw(plausible_adapter_weights())
    return cfg_text, weights


@st.composite
def plausible_adapter_weights(draw):
    """A valid safetensors header of a LoRA with consistent ranks (exercises the checks beyond the reader)."""
    r = draw(st.sampled_from([0, 1, 4, 16, 64]))
    hidden = draw(st.sampled_from([0, 64, 896, 2048, 4096, 5120]))
    other = draw(st.sampled_from([0, 128, 512, 1024, 4096, 11008]))
    names = draw(st.lists(adapter_tensor_names(), max_size=12, unique=True))
    doc, offset = {}, 0
    for name in names:
        if "lora_A" in name or "embedding_A" in name:
            shape = [r, draw(st.sampled_from([hidden, other]))]
        elif "lora_B.weight" in name or "embedding_B" in name:
            shape = [draw(st.sampled_from([hidden, other, 2 * other])), r]
        elif "experts" in name and "lora" in name:
            shape = [r * draw(st.sampled_from([1, 8, 128])), hidden]
        else:
            shape = draw(st.lists(st.sampled_from([0, 1, r, hidden, other]), min_size=1, max_size=2))
        dtype = draw(st.sampled_from(["BF16", "F32", "F16", "F8_E4M3"]))
        n = _nbytes(dtype, shape)
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header = json.dumps(doc).encode()
    return StFile(struct.pack("<Q", len(header)) + header, 8 + len(header) + offset)


def write_adapter(folder: Path, case) -> Path:
    cfg_text, weights = case
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(cfg_text, encoding="utf-8", errors="surrogatepass")
    weights.write(folder / "adapter_model.safetensors")
    return folder


# -- model folders ----------------------------------------------------------------------------------------
CONFIG_KEYS = ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "head_dim", "intermediate_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok",
               "vocab_size", "max_position_embeddings", "rope_theta", "rope_scaling", "tie_word_embeddings",
               "eos_token_id", "bos_token_id", "layer_types", "full_attention_interval", "decoder_sparse_step",
               "mlp_only_layers", "attention_bias", "text_config", "architectures", "torch_dtype",
               "shared_expert_intermediate_size", "linear_num_value_heads", "linear_key_head_dim", "sliding_window",
               "quantization_config", "auto_map", "num_local_experts"]
CONFIG_NUMS = st.one_of(st.integers(-2, 64), st.sampled_from([0, 1, 2, 3, 7, 128, 4096, 151936]),
                        st.sampled_from(HUGE), st.integers(-(2**70), 2**70), st.floats(), st.booleans())


def _catalog_configs():
    out = []
    for mid in catalog.model_ids():
        entry = catalog.model_entry(mid)
        out.append({k: v for k, v in entry.items() if not k.startswith("_")})
    return out


CATALOG_CONFIGS = _catalog_configs()
MODEL_TYPES = sorted({c.get("model_type") for c in CATALOG_CONFIGS if c.get("model_type")}) + \
    ["llama", "mistral", "gpt2", "", "../qwen3", "qwen3_moe/../qwen3"]


@st.composite
def model_configs(draw):
    """config.json: a real catalog config with some values replaced by hostile ones (also inside text_config)."""
    base = json.loads(json.dumps(draw(st.sampled_from(CATALOG_CONFIGS))))
    target = base["text_config"] if isinstance(base.get("text_config"), dict) and draw(st.booleans()) else base
    for k in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=5)):
        if k == "model_type":
            target[k] = draw(st.one_of(st.sampled_from(MODEL_TYPES), json_values))
        elif k in ("layer_types", "mlp_only_layers"):
            target[k] = draw(st.one_of(st.lists(st.one_of(st.sampled_from(["full_attention", "linear_attention",
                                                                           "sliding_attention"]), CONFIG_NUMS),
                                                max_size=6), json_values))
        else:
            target[k] = draw(st.one_of(CONFIG_NUMS, CONFIG_NUMS, json_values))
    for k in draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=2)):
        target.pop(k, None)
    if draw(rare(20)):
        return draw(json_values)
    return base


CHAT_TEMPLATES = st.one_of(
    st.text(max_size=60),
    st.sampled_from([
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "{{ 'a' * 10**10 }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ raise_exception('no system role') }}",
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}",
        "{{", "{% for %}", "{% endfor %}", "{{ messages | tojson }}", "{{ lipsum.__globals__ }}",
        "{% set x = namespace(a=1) %}{{ x.__class__ }}",
    ]),
)


@st.composite
def tokenizer_configs(draw):
    tpl = draw(st.one_of(CHAT_TEMPLATES, st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["default", "tool_use", ""]), "template": st.one_of(CHAT_TEMPLATES, json_values)}),
        max_size=2), json_values))
    doc = {"chat_template": tpl, "eos_token": draw(st.one_of(st.sampled_from(["<|im_end|>", "</s>"]), json_values)),
           "bos_token": draw(json_values), "model_max_length": draw(CONFIG_NUMS),
           "tokenizer_class": draw(st.one_of(st.sampled_from(["Qwen2Tokenizer", "LlamaTokenizerFast"]), json_values))}
    if draw(rare(10)):
        return draw(json_values)
    return doc


@st.composite
def generation_configs(draw):
    doc = {k: draw(st.one_of(CONFIG_NUMS, json_values)) for k in draw(st.lists(st.sampled_from(
        ["temperature", "top_p", "top_k", "eos_token_id", "bos_token_id", "max_new_tokens", "do_sample",
         "repetition_penalty", "pad_token_id"]), max_size=5))}
    if draw(rare(10)):
        return draw(json_values)
    return doc


@dataclass
class ModelFolder:
    files: dict[str, str] = field(default_factory=dict)  # name -> text
    weights: dict[str, StFile] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (folder / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        for name, w in self.weights.items():
            w.write(folder / name)
        return folder


@st.composite
def model_folders(draw):
    f = ModelFolder()
    if not draw(rare(30)):
        f.files["config.json"] = draw(json_text_mutation(dumps(draw(model_configs()))))
    if draw(st.booleans()):
        f.files["generation_config.json"] = draw(json_text_mutation(dumps(draw(generation_configs()))))
    if draw(st.booleans()):
        f.files["tokenizer_config.json"] = draw(json_text_mutation(dumps(draw(tokenizer_configs()))))
    if draw(rare(4)):
        f.files["chat_template.jinja"] = draw(CHAT_TEMPLATES)
    if draw(rare(6)):
        f.files["chat_template.json"] = dumps({"chat_template": draw(st.one_of(CHAT_TEMPLATES, json_values))})
    w = draw(st.sampled_from(["none", "none", "single", "index"]))
    if w == "single":
        f.weights["model.safetensors"] = draw(safetensors_files())
    elif w == "index":
        shards = draw(st.lists(st.sampled_from(["model-00001.safetensors", "model-00002.safetensors",
                                                "missing.safetensors", "../outside.safetensors", "/etc/passwd",
                                                "sub/../model-00001.safetensors", "", ".", "sub"]),
                               min_size=0, max_size=3))
        for s in set(shards):
            if s.startswith("model-"):
                f.weights[s] = draw(safetensors_files())
        wmap = {draw(st.text(max_size=10)): s for s in shards}
        doc = draw(st.one_of(st.just({"metadata": {}, "weight_map": wmap}), json_values))
        f.files["model.safetensors.index.json"] = dumps(doc)
    return f


# -- text a file can hold that a terminal or rich would act on (tests/hostile/test_escape.py) ------------------------
MARKUP = ["[INST]", "[/INST]", "[bold red]", "[/]", "[/bold]", "[link=file:///etc/passwd]x[/link]", "[", "]", "\\[",
          "[dim", "[@click=app.quit]", "[#ff0000 on blue]"]
TERMINAL = ["\x1b[2J", "\x1b]0;pwned\x07", "\x1b]8;;http://evil\x1b\\", "\r", "\x08", "\x00", "\x9b31m", "\u202e",
            "\u2066", "\ufeff", "\ud800", "\x7f", "\x1bc"]


@st.composite
def hostile_text(draw, min_parts: int = 1):
    """Plain words mixed with rich markup and terminal control sequences."""
    parts = draw(st.lists(st.one_of(st.sampled_from(MARKUP), st.sampled_from(TERMINAL),
                                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)),
                          min_size=min_parts, max_size=8))
    return "".join(parts)


# -- numbers a hostile file or flag can hold (tests/hostile/test_numbers.py) ------------------------------------------
NUMBER_TEXTS = ["²", "١٢", "--5", "+-5", "1_000", " 5", "5 ", "0x10", "1e400", "-1e400", ".nan", "nan", "NaN", "inf",
                "-inf", ".inf", "abc", "", "4.5", "1" + "0" * 400, "9" * 31, "1e3", "007", "-0", "5k", "٣"]


@st.composite
def number_texts(draw):
    """What a user may write where a number belongs: valid decimals and everything that only looks like one."""
    return draw(st.one_of(st.sampled_from(NUMBER_TEXTS), st.integers(-10**40, 10**40).map(str),
                          st.floats(allow_nan=True, allow_infinity=True).map(repr),
                          st.text(st.sampled_from("0123456789+-._eE²٣ k"), max_size=12)))


@st.composite
def number_values(draw):
    """JSON/YAML values where a number belongs: ints past every limit, floats, NaN, strings, bools, containers."""
    return draw(st.one_of(number_texts(), st.integers(-10**400, 10**400), st.sampled_from([10**400, -10**400, 2**64]),
                          st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                          st.just([1, 2]), st.just({"a": 1})))


# -- templates that are slow or huge in one C call (tests/hostile/test_bounded.py) ----------------------------------
_BIG = ["10**10", "10**10**10", "(2**64)**(2**64)", "999999999", "99999 * 99999", "9**9**9", "2**63", "1e308 * 1e308",
        "range(10**9)|length", "(messages|length) * 10**9"]
_SEQ = ["'a'", "'ab' * 1000", "[1]", "'%999999999d'", "'{:999999999}'", "'%.99999f'", "'%*d'", "messages"]


@st.composite
def heavy_templates(draw):
    """Jinja expressions mixing big constants, repetition, format widths, pow, and filters that pad."""
    big, seq = draw(st.sampled_from(_BIG)), draw(st.sampled_from(_SEQ))
    form = draw(st.sampled_from([
        "{{{{ {s} * {b} }}}}", "{{{{ {b} }}}}", "{{{{ {s} % 1 }}}}", "{{{{ {s}|format(1) }}}}",
        "{{{{ 'x'|center({b}) }}}}", "{{{{ 'x'|indent({b}) }}}}", "{{{{ {s}.format(1) }}}}",
        "{{% set w = {b} %}}{{{{ ('%' ~ w ~ 'd')|format(1) }}}}", "{{{{ ({s} * 10) * {b} }}}}",
        "{{% set ns = namespace(s={s}) %}}{{% for i in range(40) %}}{{% set ns.s = ns.s + ns.s %}}{{% endfor %}}",
    ]))
    return form.format(s=seq, b=big)
