import warnings

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """dense (qwen3), its sibling, an unrelated dense model, a MoE (qwen3_moe) model and adapters for them."""
    from tests.port import _tiny as T

    d = tmp_path_factory.mktemp("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"dir": d}
        out["dense"] = T.make_model(d / "dense", "qwen3", seed=0)
        out["sib"] = T.sibling_of(out["dense"], d / "dense-sib")
        out["other"] = T.make_model(d / "other", "qwen3", seed=7)
        out["moe"] = T.make_model(d / "moe", "qwen3_moe", seed=0)
        out["lora"] = T.peft_adapter(out["dense"], d / "lora")
        out["v4"] = T.v4_moe_adapter(out["moe"], d / "v4")
    return out
