"""Print the requirements of one of pyproject.toml's extras, with the project's self-references (``regraft[all]``)
expanded, one per line: `.ci/run` installs them beside an already installed editable regraft, so that pip does not
reinstall the project while the test zoo's build (started in the background) imports it."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^regraft\[([^\]]+)\]$")


def requirements(extra: str, extras: dict[str, list[str]], seen: set[str] | None = None) -> list[str]:
    seen = set() if seen is None else seen
    if extra in seen:
        return []
    seen.add(extra)
    if extra not in extras:
        raise SystemExit(f".ci/extras.py: pyproject.toml has no extra {extra!r}; it has {', '.join(extras)}")
    out: list[str] = []
    for req in extras[extra]:
        m = SELF.match(req.replace(" ", ""))
        if m:
            for sub in m.group(1).split(","):
                out += requirements(sub, extras, seen)
        else:
            out.append(req)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = requirements(sys.argv[1], project["optional-dependencies"])
    print("\n".join(dict.fromkeys(project["dependencies"] + reqs)))
