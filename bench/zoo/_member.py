"""Child-process entry of build_zoo: ``python -m bench.zoo._member TIER NAME ROOT TMP OUT QUIET``."""

import sys
from pathlib import Path

from .build import _build_one

if __name__ == "__main__":
    _t, _n, _root, _tmp, _out, _q = sys.argv[1:7]
    _build_one(_t, _n, Path(_root), Path(_tmp), Path(_out), _q == "1")
