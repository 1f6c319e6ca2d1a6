"""The OpenAI-compatible endpoint teacher against a local server that speaks the completions protocol the way vLLM
does (``token_id:N`` strings with --return-tokens-as-token-ids, top_logprobs, echo for the base) and serves a real
tiny source+adapter: the endpoint teacher must label exactly like the in-process one."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from regraft.port.teacher import EndpointTeacher, LocalTeacher

from tests import factories as T

pytestmark = pytest.mark.slow


def _serve(pm, tok):
    eos = tok.eos_token_id

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            k = int(body.get("logprobs") or 0)
            pr = body["prompt"]
            ids = list(pr) if isinstance(pr, list) else tok(pr, add_special_tokens=False)["input_ids"]
            ctx = pm.disable_adapter() if body["model"] == "base" else contextlib.nullcontext()
            toks, tops, tlp = [], [], []
            with torch.no_grad(), ctx:
                if body.get("echo") and body.get("max_tokens", 0) == 0:
                    lp = torch.log_softmax(pm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                    toks, tops, tlp = [f"token_id:{ids[0]}"], [None], [None]
                    for i in range(1, len(ids)):
                        v, ix = lp[i - 1].topk(k)
                        toks.append(f"token_id:{ids[i]}")
                        tops.append({f"token_id:{int(a)}": float(b) for a, b in zip(ix, v)})
                        tlp.append(float(lp[i - 1, ids[i]]))
                    finish = "length"
                else:
                    x, finish = list(ids), "length"
                    for _ in range(body["max_tokens"]):
                        lp = torch.log_softmax(pm(input_ids=torch.tensor([x])).logits[0, -1].float(), -1)
                        t = int(lp.argmax())
                        if t == eos:
                            finish = "stop"
                            break
                        v, ix = lp.topk(k)
                        toks.append(f"token_id:{t}")
                        tops.append({f"token_id:{int(a)}": float(b) for a, b in zip(ix, v)})
                        tlp.append(float(lp[t]))
                        x.append(t)
            out = {"choices": [{"text": "", "finish_reason": finish,
                                "logprobs": {"tokens": toks, "top_logprobs": tops, "token_logprobs": tlp}}]}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_endpoint_teacher_matches_the_in_process_teacher(tmp_path):
    S = T.make_dense(tmp_path / "S")
    T.save_tokenizer(S)
    A = T.random_adapter(S, tmp_path / "A", std=0.5)
    tok = T.tokenizer()
    local = LocalTeacher(S, A, tok, stop_ids=[tok.eos_token_id], k=5)
    srv = _serve(local.model, tok)
    try:
        ep = EndpointTeacher(f"http://127.0.0.1:{srv.server_port}/v1", "lora", tok, base_model="base", k=5, base_k=64)  # the tiny model has 64 logits
        prompts = ["q: abc = ", "q: hello = ", "q: zz = "]
        a, b = local.label(prompts, max_new=8), ep.label(prompts, max_new=8)
    finally:
        srv.shutdown()
    assert len(a) == len(b) == 3 and ep.calls == 9  # a generation + echo (adapter) + echo (base) per prompt
    for x, y in zip(a, b):
        assert x.comp_ids == y.comp_ids
        assert torch.equal(x.top_idx, y.top_idx)
        assert torch.allclose(x.top_logp, y.top_logp, atol=1e-4)
        assert torch.allclose(x.base_logp, y.base_logp, atol=1e-4)
        assert torch.allclose(x.excess, y.excess, atol=1e-4)
