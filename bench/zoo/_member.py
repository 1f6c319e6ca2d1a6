"""Child-process entry of build_zoo: ``python -m bench.zoo._member CONFIG_JSON NAME ROOT TMP OUT QUIET``."""

import json
import sys
from pathlib import Path

from .build import _build_one

if __name__ == "__main__":
    _c, _n, _root, _tmp, _out, _q = sys.argv[1:7]
    _build_one(json.loads(Path(_c).read_text()), _n, Path(_root), Path(_tmp), Path(_out), _q == "1")
