"""regraft port lora|config|rag ... --to TARGET: move what can be moved, and say what it cost.

Each kind lives in its own module (``regraft.cli.port_<kind>``) with ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib

KINDS = {"lora": "a PEFT LoRA adapter", "config": "a serving / generation config", "rag": "a RAG setup file"}


def add_parser(sub):
    p = sub.add_parser("port", help="port a LoRA adapter, a serving config or a RAG setup to another model",
                       description="Move an artefact to TARGET, atomically, never over the input; report what it cost.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, what in KINDS.items():
        try:
            module = importlib.import_module(f"regraft.cli.port_{kind}")
        except ModuleNotFoundError as e:
            if e.name != f"regraft.cli.port_{kind}":
                raise
            continue
        kp = kinds.add_parser(kind, help=f"port {what}", formatter_class=argparse.RawDescriptionHelpFormatter,
                              description=module.__doc__)
        module.add_arguments(kp)
        kp.set_defaults(_port_run=module.run)
    return p


def run(args) -> int:
    return args._port_run(args)
