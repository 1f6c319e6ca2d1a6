"""SIGKILL at random points (in a loop) leaves either the old state or the complete new one, for every writer.

Default: a few kills per writer. ``REGRAFT_KILL_RUNS=N`` (or ``bench/fuzz.py --kill-runs N``) for the long loop.
"""

from __future__ import annotations

import os

import pytest

from tests.hostile import writers as W
from tests.hostile.killer import aimed_kill_loop, kill_loop

RUNS = int(os.environ.get("REGRAFT_KILL_RUNS", "3"))



def test_kill_write_safetensors(tmp_path):
    res = kill_loop(W.safetensors_writer(tmp_path), tmp_path / "loop", max(RUNS, 4), seed=1)
    assert res.corrupt == 0, res.failures


def test_kill_example_materialise(tmp_path):
    res = kill_loop(W.example_writer(tmp_path), tmp_path / "loop", RUNS, seed=2)
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
def test_kill_port_lora(world, tmp_path):
    res = kill_loop(W.port_lora_writer(tmp_path, world), tmp_path / "loop", RUNS, seed=3)
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
def test_kill_port_gguf(world, tmp_path):
    pytest.importorskip("gguf")
    res = kill_loop(W.port_gguf_writer(tmp_path, world), tmp_path / "loop", RUNS, seed=4)
    assert res.corrupt == 0, res.failures


def test_kill_port_config(world, tmp_path):
    res = kill_loop(W.port_config_writer(tmp_path, world), tmp_path / "loop", RUNS, seed=5)
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
def test_kill_index(tmp_path):
    pytest.importorskip("lancedb")
    res = kill_loop(W.index_writer(tmp_path, n_docs=12), tmp_path / "loop", RUNS, seed=6)
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
def test_kill_write_peft_folder(tmp_path):
    pytest.importorskip("torch")
    res = kill_loop(W.peft_folder_writer(tmp_path), tmp_path / "loop", RUNS, seed=7)
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
def test_kill_write_gguf_file(tmp_path):
    pytest.importorskip("gguf")
    res = kill_loop(W.gguf_file_writer(tmp_path), tmp_path / "loop", RUNS, seed=8)
    assert res.corrupt == 0, res.failures


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "aside-fallback"])
def test_commit_kill_between_the_renames(tmp_path, exchange):
    """The folder commit (outputs.staged) SIGKILLed right after each rename it makes: old or new at every point
    (without RENAME_EXCHANGE: after the recovery the next run on the path does first)."""
    w = W.staged_dir_writer(tmp_path)
    if not exchange:
        w.env = lambda out: {"REGRAFT_NO_EXCHANGE": "1"}
    res = aimed_kill_loop(w, tmp_path / "aimed", recover=not exchange)
    assert res.killed >= (1 if exchange else 2) and res.finished == 1, res.to_dict()
    assert res.corrupt == 0, res.failures


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "aside-fallback"])
def test_force_kill_between_the_renames(world, tmp_path, exchange):
    """port lora --force over an older port, SIGKILLed right after each rename (the two-rename swap had a window
    where --out was missing): the path holds the old or the new adapter; without RENAME_EXCHANGE, after the
    recovery the next run does first."""
    w = W.port_lora_writer(tmp_path, world)
    if not exchange:
        w.env = lambda out: {"REGRAFT_NO_EXCHANGE": "1"}
    res = aimed_kill_loop(w, tmp_path / "aimed", recover=not exchange)
    assert res.killed >= (1 if exchange else 2) and res.finished == 1, res.to_dict()
    assert res.corrupt == 0, res.failures
