"""regraft inspect MODEL|ADAPTER: an architecture card or an adapter card (metadata only)."""

from __future__ import annotations

from pathlib import Path

from regraft.cli._common import add_format, emit


def add_parser(sub):
    p = sub.add_parser("inspect", help="architecture card of a model, or card of a PEFT adapter",
                       description="Show what regraft reads from a model (folder, HF cache, catalog, Hub) or a "
                                   "PEFT adapter folder. Reads metadata only: no weights, no torch.",
                       epilog="examples:\n  regraft inspect Qwen/Qwen3-30B-A3B\n  regraft inspect ./my-lora "
                              "--format json", formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("thing", metavar="MODEL|ADAPTER")
    p.add_argument("--allow-pickle", action="store_true", help="read adapter_model.bin with torch weights_only")
    p.add_argument("--health", action="store_true", help="adapters: scan every weight for NaN/Inf and measure the "
                   "effective rank of each module (reads the adapter's weights; numpy)")
    add_format(p)
    return p


def run(args) -> int:
    from regraft.report import render_card

    path = Path(args.thing).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        from regraft.inspection.adapter import read_adapter
        from regraft.inspection.producer import inspect_producer, producer_of

        from regraft.inspection.adapter_health import health_card

        if (path / "adapters.safetensors").is_file() and not (path / "adapter_model.safetensors").is_file():
            if args.health:
                from regraft.errors import InputError

                raise InputError(f"{path}: --health reads PEFT adapter files, and this is an MLX-LM folder "
                                 "(adapters.safetensors); convert it first with `regraft port lora --layout`.")
            card = {"path": str(path), "producer": inspect_producer(path).to_dict()}  # MLX-LM: not PEFT files
        else:
            adapter = read_adapter(path, allow_pickle=args.allow_pickle)
            card = adapter.describe()
            card["producer"] = producer_of(adapter).to_dict()
            card["health"] = health_card(adapter, full=args.health)
    else:
        if args.health:
            from regraft.errors import InputError

            raise InputError("--health applies to adapter folders (adapter_config.json); "
                             f"'{args.thing}' is a model.")
        from regraft.inspection.resolve import resolve_model

        card = resolve_model(args.thing).describe()
    emit(render_card(card, args.format))
    return 0
