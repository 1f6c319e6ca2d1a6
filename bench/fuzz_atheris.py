"""Coverage-guided fuzzing (atheris / libFuzzer) of the byte-level readers, seeded with valid files.

    pip install atheris
    python bench/fuzz_atheris.py safetensors-header --runs 200000
    python bench/fuzz_atheris.py serving-config --runs 50000

Any exception other than a RegraftError (or a hang past -timeout) stops libFuzzer with the crashing input saved as
crash-*; the script prints a JSON line {"reader", "runs", "crashes", "seconds"} at the end.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import atheris  # noqa: E402

with atheris.instrument_imports():
    from regraft.configs.readers import read_config
    from regraft.errors import RegraftError
    from regraft.inspection.files import read_json
    from regraft.inspection.safetensors_header import read_header
    from regraft.rag.setup import read_rag

TMP = Path(tempfile.mkdtemp(prefix="regraft-atheris-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
SEEDS = {
    "safetensors-header": [b"\x40\x00\x00\x00\x00\x00\x00\x00" + json.dumps(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {"format": "pt"}}
    ).encode().ljust(64) + b"\0" * 16],
    "json-config": [json.dumps({"model_type": "qwen3", "hidden_size": 4096, "num_hidden_layers": 36,
                                "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}).encode()],
    "serving-config": [b"max-model-len: 32768\nenable-lora: true\nsampling:\n  temperature: 0.6\n",
                       b"vllm serve Qwen/Qwen3-8B --max-model-len 8192 --tp 2\n"],
    "rag-setup": [b"chunking: {size: 512, unit: tokens}\nretrieval: {top_k: 8}\n"
                  b"prompt: {user: \"{context} {question}\"}\n"],
}
READ = {"safetensors-header": ("x.safetensors", read_header), "json-config": ("config.json", read_json),
        "serving-config": ("serve.yaml", read_config), "rag-setup": ("rag.yaml", read_rag)}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("reader", choices=sorted(READ))
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--timeout", type=int, default=20)
    args, rest = ap.parse_known_args()
    name, fn = READ[args.reader]
    path = TMP / name
    corpus = TMP / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(SEEDS[args.reader]):
        (corpus / f"seed{i}").write_bytes(s)
    runs = [0]
    t0 = time.time()

    import regraft.configs.readers as cr
    import regraft.rag.setup as rs

    def one(data: bytes) -> None:
        runs[0] += 1
        path.write_bytes(data)
        cr._read_cached.cache_clear()
        rs._read_cached.cache_clear()
        try:
            fn(path)
        except RegraftError:
            pass
        except BaseException as e:
            print(json.dumps({"reader": args.reader, "runs": runs[0], "crashes": 1, "seconds": round(time.time() - t0),
                              "crash": f"{type(e).__name__}: {str(e)[:300]}"}), flush=True)
            raise

    import atexit

    atexit.register(lambda: print(json.dumps({"reader": args.reader, "runs": runs[0], "crashes": 0,
                                              "seconds": round(time.time() - t0)}), flush=True))
    atheris.Setup([sys.argv[0], f"-runs={args.runs}", f"-timeout={args.timeout}", "-rss_limit_mb=4096",
                   str(corpus), *rest], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
