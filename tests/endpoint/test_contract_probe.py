"""The hybrid start-up contract probes an adapter served by name with verify --endpoint's probe."""

import asyncio
import warnings

import pytest

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.server


def _contract(url, model):
    from regraft.hybrid.backends import Backend
    from regraft.hybrid.contract import check_contract
    from regraft.hybrid.policy import load_policy

    b = Backend(url, None, role="small", timeout=20, retries=0)
    return asyncio.run(check_contract(b, None, load_policy(None), None, small_model=model, probe_timeout=20))


def test_noop_adapter_stops_start_up(server):
    rep = _contract(server, "noop")
    f = next(f for f in rep.findings if f.code == "adapter-no-effect")
    assert f.severity == "error" and "answers exactly like its base" in f.message and rep.errors


def test_applied_adapter_passes_and_base_is_not_probed(server):
    rep = _contract(server, "good")
    assert any(f.code == "adapter-applied" and f.severity == "info" for f in rep.findings)
    assert not any(f.code.startswith("adapter-") for f in _contract(server, "qwen3-tiny").findings)
