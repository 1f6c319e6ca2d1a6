"""Distillation under `accelerate launch` with two CPU processes (gloo) gives an adapter of the same quality as one
process (issue 17, real-scale path; on CPU the processes are data-parallel, FSDP needs GPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factories as T

SEEDS = ["q: abc = ", "q: hello = ", "q: zzyx = ", "q: mnop = ", "q: qrstu = "]


def _launch(n, args, env):
    import socket

    with socket.socket() as sk:  # a free port for the gloo rendezvous
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    # one process: --cpu; two: torchrun through --multi_gpu, which on a machine without GPUs and with
    # Accelerator(cpu=True) is MULTI_CPU over gloo (accelerate's --cpu alone starts one process)
    mode = ["--cpu"] if n == 1 else ["--multi_gpu", "--main_process_port", str(port)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(n), "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("_distill_worker.py")),
           *map(str, args)]
    r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_two_processes_give_the_quality_of_one(tmp_path):
    from regraft.port import prompts as P
    from regraft.port.fidelity import teacher_fidelity
    from regraft.port.teacher import LocalTeacher

    S = T.make_dense(tmp_path / "S")
    Tg = T.make_dense(tmp_path / "T", "qwen3", seed=3, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                      num_key_value_heads=2)
    T.save_tokenizer(S, Tg)
    A = T.random_adapter(S, tmp_path / "A", std=0.5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out1 = _launch(1, [A, S, Tg, tmp_path / "one"], env)
    out2 = _launch(2, [A, S, Tg, tmp_path / "two"], env)
    assert "'processes': 1" in out1 and "'processes': 2" in out2 and "data parallel" in out2
    items = LocalTeacher(S, A, T.tokenizer()).label(P.from_seeds(SEEDS, 24, seed=77))
    base = teacher_fidelity(T.load(Tg), items)["kl"]
    kl1 = teacher_fidelity(T.with_adapter(Tg, tmp_path / "one"), items)["kl"]
    kl2 = teacher_fidelity(T.with_adapter(Tg, tmp_path / "two"), items)["kl"]
    assert kl1 < 0.8 * base and kl2 < 0.8 * base, (base, kl1, kl2)
    assert abs(kl1 - kl2) < 0.15 * base, (base, kl1, kl2)  # the same quality within noise
