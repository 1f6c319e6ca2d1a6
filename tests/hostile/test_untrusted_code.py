"""Untrusted code never runs: pickles are not unpickled by default (and only with torch's weights_only loader when
asked), chat templates render in a sandbox, remote code (auto_map) is never imported."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest

from regraft.errors import RegraftError, UnsafeInputError
from regraft.inspection.adapter import read_adapter
from tests.hostile._files import TINY_CONFIG, adapter_folder, model_folder

SRC = Path(__file__).resolve().parents[2] / "src" / "regraft"


class _Boom:
    """Unpickling this runs ``os.system``: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_adapter(d: Path, marker: Path, torch_format: bool) -> Path:
    adapter_folder(d)
    (d / "adapter_model.safetensors").unlink()
    payload = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": _Boom(marker)}
    if torch_format:
        torch = pytest.importorskip("torch")
        torch.save(payload, d / "adapter_model.bin")
    else:
        (d / "adapter_model.bin").write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    return d


@pytest.mark.parametrize("torch_format", [False, True])
def test_malicious_pickle_is_not_unpickled_by_default(tmp_path, torch_format):
    marker = tmp_path / "PWNED"
    d = _malicious_adapter(tmp_path / "adapter", marker, torch_format)
    with pytest.raises(UnsafeInputError, match="pickle"):
        read_adapter(d)
    assert not marker.exists()


@pytest.mark.parametrize("torch_format", [False, True])
def test_malicious_pickle_is_refused_even_with_allow_pickle(tmp_path, torch_format):
    pytest.importorskip("torch")
    marker = tmp_path / "PWNED"
    d = _malicious_adapter(tmp_path / "adapter", marker, torch_format)
    with pytest.raises(UnsafeInputError, match="weights_only"):
        read_adapter(d, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["inspect", "{a}"], ["inspect", "{a}", "--allow-pickle"],
    ["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "--adapter", "{a}"],
    ["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "--adapter", "{a}", "--allow-pickle"],
    ["port", "lora", "{a}", "--to", "Qwen/Qwen3-14B", "--out", "{out}", "--no-drift"],
    ["verify", "{a}", "--on", "{m}"],
])
def test_malicious_pickle_through_the_cli(tmp_path, capsys, argv):
    pytest.importorskip("torch")
    from regraft.cli.main import main

    marker = tmp_path / "PWNED"
    a = _malicious_adapter(tmp_path / "adapter", marker, True)
    m = model_folder(tmp_path / "model")
    argv = [x.format(a=a, m=m, out=tmp_path / "out") for x in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # a command not built in this checkout: argparse usage error
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_legit_bin_loads_with_allow_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    d = adapter_folder(tmp_path / "adapter")
    (d / "adapter_model.safetensors").unlink()
    k = "base_model.model.model.layers.0.self_attn.q_proj"
    torch.save({f"{k}.lora_A.weight": torch.zeros(4, 32), f"{k}.lora_B.weight": torch.zeros(32, 4)},
               d / "adapter_model.bin")
    spec = read_adapter(d, allow_pickle=True)
    assert spec.modules[0].rank == 4


# -- chat templates ------------------------------------------------------------------------------------------------
ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {m}') }}",
    "{{ joiner.__init__.__globals__.os.system('touch {m}') }}",
    "{{ namespace.__init__.__globals__.os.system('touch {m}') }}",
    "{{ lipsum.__globals__['os'].system('touch {m}') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {m}') }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__['__builtins__']['__import__']('os').system('touch {m}') }}",
    "{{ messages[0].update({{'role': 'x'}}) }}{{ messages.append(1) }}",
    "{% set x = messages.pop() %}",
    "{{ ''.format.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ (messages|first).__class__.__init__.__globals__ }}",
]


def _renderers():
    out = []
    try:
        from regraft.rag.template import render

        out.append(("rag.template", lambda src: render(src, [{"role": "user", "content": "hi"}])))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("template", ESCAPES)
def test_chat_template_sandbox_escape_fails_cleanly(tmp_path, template):
    renderers = _renderers()
    if not renderers:
        pytest.skip("no chat-template renderer in this checkout")
    marker = tmp_path / "PWNED"
    src = template.replace("{m}", str(marker))
    for name, render in renderers:
        try:
            out = render(src)
        except RegraftError as e:  # the usual outcome: SecurityError -> one-line TemplateError
            assert len(str(e).splitlines()) == 1, name
        else:  # an attribute that does not exist renders as undefined (empty): nothing leaks either
            assert not any(s in out for s in ("<class", "<module", "<function", "built-in", "__")), (name, out)
        assert not marker.exists(), name


@pytest.mark.parametrize("template", ESCAPES)
def test_contract_template_check_is_sandboxed(tmp_path, template):
    """The runtime's contract check renders the endpoint model's template with `check --rag`'s sandbox: no
    escape runs, the caller's messages are not changed, any failure is an ordinary exception."""
    from regraft.hybrid.contract import PROBE_MESSAGES, render_chat

    marker = tmp_path / "PWNED"
    msgs = json.loads(json.dumps(PROBE_MESSAGES))
    try:
        render_chat(template.replace("{m}", str(marker)), msgs)
    except Exception as e:  # noqa: BLE001 - refusal is fine; what matters is what did not happen
        assert not isinstance(e, (SystemExit, KeyboardInterrupt))
    assert not marker.exists()
    assert msgs == PROBE_MESSAGES


def test_check_rag_renders_hostile_target_template_cleanly(tmp_path, capsys):
    from regraft.cli.main import main

    marker = tmp_path / "PWNED"
    m = model_folder(tmp_path / "model")
    tok = json.loads((m / "tokenizer_config.json").read_text())
    tok["chat_template"] = ESCAPES[1].replace("{m}", str(marker))
    (m / "tokenizer_config.json").write_text(json.dumps(tok))
    rag = tmp_path / "rag.yaml"
    rag.write_text("retrieval: {top_k: 4}\nchunking: {size: 256, unit: tokens}\n")
    try:
        code = main(["check", str(m), str(m), "--rag", str(rag)])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    assert not marker.exists()


# -- remote code ---------------------------------------------------------------------------------------------------
def test_auto_map_remote_code_is_never_imported(tmp_path, capsys):
    from regraft.cli.main import main

    marker = tmp_path / "PWNED"
    cfg = dict(TINY_CONFIG, auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                      "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    m = model_folder(tmp_path / "model", cfg)
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n"
    (m / "configuration_evil.py").write_text(code + "class EvilConfig: pass\n")
    (m / "modeling_evil.py").write_text(code + "class EvilModel: pass\n")
    a = adapter_folder(tmp_path / "adapter")
    for argv in (["inspect", str(m)], ["check", str(m), str(m), "--adapter", str(a)],
                 ["port", "lora", str(a), "--to", str(m), "--out", str(tmp_path / "out"), "--no-drift"],
                 ["verify", str(a), "--on", str(m)], ["drift", str(m), str(m)]):
        try:
            main(argv)
        except SystemExit:
            pass
        capsys.readouterr()
        assert not marker.exists(), argv


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_source_never_enables_remote_code_or_unsafe_unpickling():
    """Static guard over src/: no trust_remote_code other than False, torch.load only with weights_only=True,
    no pickle/dill/joblib/marshal loads, no eval/exec."""
    problems = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for call in _calls(tree):
            fn = ast.unparse(call.func)
            kw = {k.arg: k.value for k in call.keywords}
            where = f"{path.relative_to(SRC)}:{call.lineno} {fn}"
            if "trust_remote_code" in kw and not (isinstance(kw["trust_remote_code"], ast.Constant)
                                                  and kw["trust_remote_code"].value is False):
                problems.append(f"{where}: trust_remote_code={ast.unparse(kw['trust_remote_code'])}")
            if fn.endswith("torch.load") or fn == "load" and "weights_only" in kw:
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if fn in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "joblib.load", "marshal.loads",
                      "eval", "exec", "cloudpickle.load", "cloudpickle.loads"):
                problems.append(where)
    assert not problems, problems
