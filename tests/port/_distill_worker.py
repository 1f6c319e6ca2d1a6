"""Run by `accelerate launch` in tests/port/test_transport_distributed.py: one distillation on a tiny pair."""

import sys

import torch

from regraft.port.methods.distill.distributed import distill_distributed

SEEDS = ["q: abc = ", "q: hello = ", "q: zzyx = ", "q: mnop = ", "q: qrstu = "]

if __name__ == "__main__":
    torch.set_num_threads(1)
    adapter, source, target, out = sys.argv[1:5]
    rep = distill_distributed(adapter, source, target, out, seeds=SEEDS, n_prompts=32, init=None, steps=40,
                              eval_every=10, batch=8, lr=5e-3, show_progress=False, force=True, stream=False)
    print("MODE", rep.details["distributed"]["mode"], rep.details["training"]["accelerate"])
