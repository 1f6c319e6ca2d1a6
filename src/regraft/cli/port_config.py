"""Port a serving / generation config to TARGET and a runtime: the translated file, a diff with one reason per change,
and the values regraft cannot know (left out and named).

Reads generation_config.json, vLLM/SGLang YAML/JSON (--config files and recipes), command lines (vllm serve,
python -m sglang.launch_server, llama-server) and Ollama Modelfiles.

examples:
  regraft port config serve.yaml --to Qwen/Qwen3-235B-A22B-Instruct-2507 --runtime vllm --out serve-235b.yaml
  regraft port config serve.yaml --from Qwen/Qwen3-30B-A3B-Base --to Qwen/Qwen3-32B --runtime llama.cpp
  regraft port config generation_config.json --to Qwen/Qwen3-32B --out gen-32b.json
exit codes: 0 written (or printed), 2 usage or input error
"""

from __future__ import annotations

import json

from regraft.cli._common import add_format, emit


def add_arguments(p) -> None:
    p.add_argument("config", metavar="FILE", help="the config to port")
    p.add_argument("--to", required=True, metavar="TARGET", help="target model (folder, repo id or catalog name)")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="the model the config was written for (default: the config's model, when known)")
    p.add_argument("--runtime", choices=("vllm", "sglang", "llama.cpp", "ollama", "transformers"),
                   help="runtime to write for (default: the config's own)")
    p.add_argument("--out", metavar="FILE", help="write the ported config here (default: print it)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_format(p, ("table", "json"))  # "text" is accepted as another name for table


def _source(args, cfg):
    from regraft.errors import RegraftError
    from regraft.inspection.resolve import resolve_model

    if args.source:
        return resolve_model(args.source)
    name = cfg.get("model")
    if not name:
        return None
    try:
        return resolve_model(name, use_hub=False)
    except RegraftError:
        return None


def run(args) -> int:
    from regraft.configs.output import write_text_atomic
    from regraft.configs.port import plan
    from regraft.configs.readers import read_config
    from regraft.configs.writers import render
    from regraft.inspection.resolve import resolve_model

    cfg = read_config(args.config)
    target = resolve_model(args.to)
    source = _source(args, cfg)
    res = plan(cfg, source, target, args.runtime)
    text, command = render(res)
    if args.out:
        write_text_atomic(args.out, text, [args.config, target.path, source.path if source else None],
                          args.force)
    if args.format == "json":
        d = res.to_dict()
        d.update(out=args.out, command=command, text=None if args.out else text)
        emit(json.dumps(d, indent=2, default=str))
        return 0
    lines = [f"port config {cfg.path.name} ({cfg.format}) -> {target.name} ({res.runtime})"
             + (f", written for {source.name}" if source else ", source model unknown (use --from)")]
    lines.append(res.diff_text())
    for n in res.notes:
        lines.append(f"note: {n}")
    if command:
        lines.append(f"command: {command}")
    if args.out:
        lines.append(f"wrote {args.out}")
    else:
        lines.append("---")
        lines.append(text.rstrip("\n"))
    emit("\n".join(lines))
    return 0
