"""Worker process of build_zoo: ``python -m bench.zoo._member`` reads one JSON line per member from stdin,
``[CONFIG_JSON, NAME, ROOT, TMP, OUT, QUIET]``, builds it (`_build_one`, which writes OUT when done) and waits for
the next line; exits at end of input. A failed build ends the process with the error. With arguments
``CONFIG_JSON NAME ROOT TMP OUT QUIET`` it builds that one member and exits."""

import json
import sys
from pathlib import Path

from .build import _build_one

if __name__ == "__main__":
    if len(sys.argv) > 1:  # one member from the command line: ``_member CONFIG_JSON NAME ROOT TMP OUT QUIET``
        _c, _n, _root, _tmp, _out, _q = sys.argv[1:7]
        _build_one(json.loads(Path(_c).read_text()), _n, Path(_root), Path(_tmp), Path(_out), _q == "1")
        sys.exit(0)
    for line in sys.stdin:
        if not line.strip():
            continue
        _c, _n, _root, _tmp, _out, _q = json.loads(line)
        _build_one(json.loads(Path(_c).read_text()), _n, Path(_root), Path(_tmp), Path(_out), bool(_q))
