"""A small OpenAI-compatible server for the `verify --endpoint` tests: a tiny transformers model, PEFT adapters.

    python -m tests.endpoint.server --base DIR --adapter NAME=DIR[:MODE] ... --port N [--token-ids]

Each adapter is served by NAME, as vLLM serves ``--lora-modules NAME=PATH`` (listed in /v1/models with its
``parent``). MODE says what the server really does with it:

- ``apply`` (default): PEFT applies it;
- ``ignore``: the base answers (the silent no-op: loaded, 200 OK, output of the base);
- ``swap``: a corrupted copy is applied, lora_A and lora_B exchanged (and transposed, so shapes still fit) on every
  square module (q_proj, o_proj here): the update becomes (B A)^T;
- ``halfscale``: applied at half its scale (a runtime that ignores rsLoRA or alpha);
- ``nologprobs``: applied, but the answers carry no log-probabilities (a server that ignores the field);
- ``rejectlp``: applied, but a request asking for log-probabilities is refused (HTTP 400);
- ``slow``: applied, after a 30 s pause (timeouts).

/v1/completions (``logprobs: k``) and /v1/chat/completions (``logprobs``/``top_logprobs``) generate greedily, with
token texts as vLLM writes them (``tokenizer.decode([id])``; ``--token-ids``: ``token_id:N`` as vLLM's
``--return-tokens-as-token-ids``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path


def corrupt(adapter_dir: Path, out: Path, mode: str) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter_dir, out)
    sd = load_file(str(out / "adapter_model.safetensors"))
    new = dict(sd)
    for k, a in sd.items():
        if ".lora_A." not in k:
            continue
        kb = k.replace(".lora_A.", ".lora_B.")
        b = sd[kb]
        if mode == "swap" and a.shape[1] == b.shape[0]:  # square module: A' = B^T, B' = A^T
            new[k], new[kb] = b.T.contiguous(), a.T.contiguous()
        elif mode == "halfscale":
            new[kb] = b * 0.5
    save_file({k: v.to(torch.float32) for k, v in new.items()}, str(out / "adapter_model.safetensors"))
    return out


def build_app(base_dir: str, adapters: dict[str, tuple[str, str]], token_ids: bool = False):
    import torch
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(base_dir)
    base_name = Path(base_dir).name
    models, modes = {base_name: AutoModelForCausalLM.from_pretrained(base_dir).eval()}, {base_name: "base"}
    tmp = Path(tempfile.mkdtemp(prefix="regraft-test-server-"))
    for name, (path, mode) in adapters.items():
        modes[name] = mode
        if mode == "ignore":
            models[name] = models[base_name]
            continue
        src = corrupt(Path(path), tmp / name, mode) if mode in ("swap", "halfscale") else Path(path)
        models[name] = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(src)).eval()
    app = FastAPI()
    eos = tok.eos_token_id

    def name_of(i: int) -> str:
        return f"token_id:{i}" if token_ids else tok.decode([i])

    def error(status: int, msg: str):
        return JSONResponse({"error": {"message": msg, "type": "invalid_request_error", "code": status}}, status)

    @torch.no_grad()
    def generate(model, ids: list[int], max_tokens: int, k: int):
        out = []
        x = torch.tensor([ids])
        for _ in range(max_tokens):
            lp = torch.log_softmax(model(input_ids=x).logits[0, -1].float(), -1)
            tv, ti = lp.topk(k)
            nxt = int(ti[0])
            out.append((nxt, float(lp[nxt]), [(int(i), float(v)) for i, v in zip(ti, tv)]))
            if nxt == eos:
                break
            x = torch.cat([x, torch.tensor([[nxt]])], 1)
        return out

    async def run(body: dict, ids: list[int], k: int):
        name = body.get("model")
        if name not in models:
            return None, error(404, f"The model `{name}` does not exist.")
        if modes[name] == "slow":
            await asyncio.sleep(30)
        if modes[name] == "rejectlp" and (body.get("logprobs") or body.get("top_logprobs")):
            return None, error(400, "logprobs are not supported for this model")
        mt = int(body.get("max_tokens") or 16)
        return (name, generate(models[name], ids, mt, max(1, k))), None

    @app.get("/v1/models")
    def list_models():
        data = [{"id": base_name, "object": "model", "owned_by": "regraft-test", "root": base_dir, "parent": None}]
        data += [{"id": n, "object": "model", "owned_by": "regraft-test", "root": p, "parent": base_name}
                 for n, (p, _) in adapters.items()]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(body: dict):
        prompt = body.get("prompt")
        prompt = prompt[0] if isinstance(prompt, list) else prompt
        if not isinstance(prompt, str):
            return error(400, "prompt must be a string")
        k = body.get("logprobs")
        res, err = await run(body, tok(prompt)["input_ids"], int(k or 1))
        if err:
            return err
        name, gen = res
        text = tok.decode([t for t, _, _ in gen if t != eos])
        choice = {"index": 0, "text": text, "finish_reason": "stop" if gen and gen[-1][0] == eos else "length",
                  "logprobs": None}
        if k is not None and modes[name] != "nologprobs":
            choice["logprobs"] = {"tokens": [name_of(t) for t, _, _ in gen],
                                  "token_logprobs": [v for _, v, _ in gen],
                                  "top_logprobs": [{name_of(i): v for i, v in top[:int(k)]} for _, _, top in gen],
                                  "text_offset": [0] * len(gen)}
        return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": name,
                "choices": [choice], "usage": {"completion_tokens": len(gen)}}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            return error(400, "messages must be a list")
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        k = int(body.get("top_logprobs") or 1)
        res, err = await run(body, tok(ids)["input_ids"], k)
        if err:
            return err
        name, gen = res
        text = tok.decode([t for t, _, _ in gen if t != eos])
        lp = None
        if body.get("logprobs") and modes[name] != "nologprobs":
            lp = {"content": [{"token": name_of(t), "logprob": v,
                               "top_logprobs": [{"token": name_of(i), "logprob": x} for i, x in top[:k]]}
                              for t, v, top in gen]}
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop" if gen and gen[-1][0] == eos else "length", "logprobs": lp}]}

    return app


def main(argv=None):
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", action="append", default=[], help="NAME=DIR[:MODE]")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-ids", action="store_true")
    a = p.parse_args(argv)
    adapters = {}
    for spec in a.adapter:
        name, _, rest = spec.partition("=")
        path, _, mode = rest.partition(":")
        adapters[name] = (path, mode or "apply")
    app = build_app(a.base, adapters, a.token_ids)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
