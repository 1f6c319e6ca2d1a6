"""Property: every reader, on any generated input, succeeds or raises a RegraftError with a one-line message.

No other exception, no hang (per-case alarm), no allocation driven by a declared size (see test_regressions.py).
Cases per reader: the hypothesis profile (conftest.py; the default "ci" profile runs 200 cases of the fast readers
and 100 of the slow ones); the long campaign with counts is ``bench/fuzz.py``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

from tests.hostile.harness import check_case, scratch
from tests.hostile.targets import TARGETS

pytestmark = pytest.mark.fuzz


def _prop(name):
    target = TARGETS[name]

    @settings(max_examples=min(settings.default.max_examples, target.ci_cases)
              if settings.get_current_profile_name() == "ci" and not os.environ.get("REGRAFT_FUZZ_CASES")
              else settings.default.max_examples)
    @given(target.strategy)
    def inner(case):
        with scratch() as d:
            check_case(target.run, case, d)

    def prop():
        if target.warmup:
            target.warmup()
        inner()

    prop.__name__ = f"test_{name.replace('-', '_')}"
    return prop


test_safetensors_header = _prop("safetensors-header")
test_adapter = _prop("adapter")
test_model_folder = _prop("model-folder")
test_check = _prop("check")
test_serving_config = _prop("serving-config")
test_rag_setup = _prop("rag-setup")
test_policy = _prop("policy")
test_chat_template = _prop("chat-template")
test_store_meta = _prop("store-meta")
test_gguf = _prop("gguf")
test_tokenizer_json = _prop("tokenizer-json")
