"""Bad input: one clear line and exit 2, never a traceback, for every way an input can be broken."""

from __future__ import annotations

import json
import struct

import pytest

from regraft.cli.main import main


def check_err(capsys, argv, *needles):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert err.startswith("regraft ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 32, "num_hidden_layers": 2,
                                               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                                               "intermediate_size": 48, "vocab_size": 128}))
    return d


def write_header(path, header: bytes, declared: int | None = None, data: bytes = b""):
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + data)


def test_missing_folder(capsys):
    check_err(capsys, ["check", "./no/such/model", "Qwen/Qwen3-32B"], "Unknown model './no/such/model'")


def test_adapter_missing(capsys, tmp_path):
    check_err(capsys, ["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "--adapter", str(tmp_path / "x")], "no such folder")


def test_adapter_without_config(capsys, tmp_path):
    check_err(capsys, ["check", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "--adapter", str(tmp_path)], "no adapter_config.json")


def test_malformed_config_json(capsys, model_dir):
    (model_dir / "config.json").write_text('{"model_type": "qwen3",')
    check_err(capsys, ["inspect", str(model_dir)], "invalid JSON at line 1", "config.json")


def test_config_json_not_an_object(capsys, model_dir):
    (model_dir / "config.json").write_text("[1, 2]")
    check_err(capsys, ["inspect", str(model_dir)], "expected a JSON object")


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_bytes(b"\x01\x02"), "shorter than the 8-byte length prefix"),
    (lambda p: write_header(p, b"{}", declared=10**12), "larger than the limit"),
    (lambda p: write_header(p, b"{}", declared=5000), "larger than the rest of the file"),
    (lambda p: write_header(p, b"{not json"), "not valid UTF-8 JSON"),
    (lambda p: write_header(p, json.dumps({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}).encode(),
                            data=b"\0" * 8), "unknown dtype 'F99'"),
    (lambda p: write_header(p, json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode(),
                            data=b"\0" * 8), "outside the data region"),
    (lambda p: write_header(p, json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode(),
                            data=b"\0" * 8), "needs 16 bytes but spans 8"),
    (lambda p: write_header(p, json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode(),
                            data=b"\0" * 12), "overlap"),
])
def test_broken_safetensors(capsys, model_dir, make, needle):
    make(model_dir / "model.safetensors")
    check_err(capsys, ["inspect", str(model_dir)], needle, "model.safetensors")


def test_pickle_adapter_refused_by_default(capsys, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    check_err(capsys, ["inspect", str(tmp_path)], "pickle", "--allow-pickle")


def test_adapter_config_wrong_type(capsys, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": "eight"}))
    check_err(capsys, ["inspect", str(tmp_path)], "'r' is str", "expected int")


def test_shard_outside_folder_refused(capsys, model_dir):
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    check_err(capsys, ["inspect", str(model_dir)], "names '../../etc/passwd', which is outside")


def test_adapter_folder_given_as_model(capsys, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    check_err(capsys, ["check", str(tmp_path), "Qwen/Qwen3-32B"], "PEFT adapter folder, not a model")
