"""Reading small JSON/YAML/text files with one-line errors that name the file and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

from regraft.errors import FileFormatError, InputError

MAX_SMALL_FILE = 50_000_000  # configs, templates and manifests are small; refuse anything absurd


def regular_file_size(path: Path, what: str) -> int:
    """The size of ``path``, refused (one line) when it is missing, unreadable or not a regular file: a FIFO, a
    device or a socket would block ``open()`` or never end. Also notes the file as an input of this command."""
    import os
    import stat

    from regraft.outputs import note_read

    note_read(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"Cannot read {what} '{path}': no such file.") from None
    except PermissionError:
        raise InputError(f"Cannot read {what} '{path}': permission denied.") from None
    except (OSError, ValueError) as e:  # a name too long, a NUL in it, a loop of links
        raise InputError(f"Cannot read {what} '{path}': {getattr(e, 'strerror', None) or e}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"Cannot read {what} '{path}': it is a directory, expected a file.")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"Cannot read {what} '{path}': it is not a regular file (a FIFO, device or socket). "
                         "Name the file itself.")
    return st.st_size


def read_text(path: Path, what: str = "file") -> str:
    path = Path(path)
    size = regular_file_size(path, what)
    try:
        if size > MAX_SMALL_FILE:
            raise FileFormatError(f"Cannot read {what} '{path}': it is {size} bytes, more than the {MAX_SMALL_FILE} "
                                  "bytes such a file can reasonably have. Check that you named the right file.")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"Cannot read {what} '{path}': no such file.") from None
    except IsADirectoryError:
        raise InputError(f"Cannot read {what} '{path}': it is a directory, expected a file.") from None
    except PermissionError:
        raise InputError(f"Cannot read {what} '{path}': permission denied.") from None
    except UnicodeDecodeError:
        raise FileFormatError(f"Cannot read {what} '{path}': it is not UTF-8 text.") from None


def read_json(path: Path, what: str | None = None, expect: type = dict):
    path = Path(path)
    what = what or path.name
    text = read_text(path, what)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"Cannot parse {what} '{path}': invalid JSON at line {e.lineno} column {e.colno} "
                              f"({e.msg}). Fix the file or re-download it.") from None
    except RecursionError:
        raise FileFormatError(f"Cannot parse {what} '{path}': JSON nested too deeply.") from None
    except ValueError as e:  # an integer over Python's 4300-digit limit
        raise FileFormatError(f"Cannot parse {what} '{path}': {str(e).split(';')[0]}. Fix the file or "
                              "re-download it.") from None
    if not isinstance(doc, expect):
        raise FileFormatError(f"Cannot use {what} '{path}': it holds a JSON {type(doc).__name__}, "
                              f"expected a JSON {'object' if expect is dict else expect.__name__}.")
    return doc


def read_jsonl(path: Path, what: str, fields: tuple[str, ...] | None = None) -> list[dict]:
    """One JSON object per line (blank lines skipped), each a dict; with ``fields``, each must hold a string in
    one of them. Bounded like ``read_text`` (size, regular file, UTF-8); errors name the line."""
    path = Path(path)
    text = read_text(path, what)
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise FileFormatError(f"Cannot parse {what} '{path}' line {i}: invalid JSON ({e.msg}). Expected one JSON "
                                  "object per line.") from None
        except (ValueError, RecursionError):
            raise FileFormatError(f"Cannot parse {what} '{path}' line {i}: JSON nested too deeply or a number too "
                                  "long. Expected one JSON object per line.") from None
        if not isinstance(d, dict):
            raise FileFormatError(f"Cannot use {what} '{path}' line {i}: a JSON {type(d).__name__}, expected an "
                                  "object" + (f" with a string '{fields[0]}'" if fields else "") + ".")
        if fields and not any(isinstance(d.get(f), str) for f in fields):
            raise FileFormatError(f"Cannot use {what} '{path}' line {i}: expected a string in "
                                  f"{' / '.join(repr(f) for f in fields)}.")
        out.append(d)
    return out


def read_json_if_exists(path: Path, what: str | None = None):
    return read_json(path, what) if Path(path).is_file() else None


def inside(folder: Path, rel: str, named_in: str | None = None) -> Path:
    """``folder / rel``, refused (UnsafeInputError) when ``rel`` is absolute, climbs out with '..', or is a link
    that leads outside ``folder``. A Hugging Face cache snapshot's links into its repo's ``blobs/`` are fine."""
    import os

    from regraft.errors import UnsafeInputError

    folder = Path(folder)
    if not isinstance(rel, str) or not rel or "\0" in rel or len(rel) > 1024 or not _utf8(rel):
        shown = repr(rel)[:80] + ("..." if len(repr(rel)) > 80 else "")
        raise FileFormatError(f"'{named_in or folder}' (in {folder}) names the file {shown}: expected a file name "
                              "(a string of at most 1024 characters, UTF-8, no NUL). Fix the manifest.")
    candidate = folder / rel
    if _plain_entry(folder, rel):
        return candidate
    where = f"'{named_in}' (in {folder}) names {rel!r}" if named_in else f"'{candidate}'"
    try:
        resolved = candidate.resolve()
        roots = [folder.resolve()]
        if folder.parent.name == "snapshots":
            roots.append((folder.parent.parent / "blobs").resolve())
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on older Pythons
        raise InputError(f"Cannot resolve {where}: {e}.") from None
    if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise UnsafeInputError(f"{where}, which is outside {folder}. Refusing to read it; fix the manifest.")
    if not any(r == resolved or r in resolved.parents for r in roots):
        raise UnsafeInputError(f"{where}, a link to '{resolved}', outside {folder}. Refusing to read it; copy the "
                               "file into the folder if you trust it.")
    return candidate


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _plain_entry(folder: Path, rel: str) -> bool:
    """True when ``rel`` is a bare file name in ``folder`` that is not a link: inside by construction, no need to
    resolve it (a sharded 235B checkpoint names ~100 shards). Anything else takes the full check."""
    import os
    import stat

    if not rel or rel in (".", "..") or "/" in rel or os.sep in rel or (os.altsep and os.altsep in rel):
        return False
    try:
        return not stat.S_ISLNK(os.lstat(os.path.join(folder, rel)).st_mode)
    except (OSError, ValueError):
        return False


MAX_YAML_VALUES = 100_000  # a settings file has hundreds; aliases that expand past this are a "billion laughs"


def load_yaml(text: str):
    """``yaml.safe_load``, refusing (ValueError) a document whose anchors/aliases expand to more than
    MAX_YAML_VALUES values, which would make any walk over it run for hours."""
    import yaml

    depth = deepest = 0
    for ch in text:  # PyYAML's scanner is quadratic in flow nesting: refuse "[[[[..." before it starts
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_DEPTH * 4:
        raise ValueError(f"YAML flow collections nested {deepest} deep")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n) -> int:
            key = id(n)
            if key in sizes:
                if sizes[key] < 0:
                    raise ValueError("YAML aliases form a cycle")
                return sizes[key]
            sizes[key] = -1
            total = 1
            if isinstance(n, yaml.MappingNode):
                total += sum(size(k) + size(v) for k, v in n.value)
            elif isinstance(n, yaml.SequenceNode):
                total += sum(size(c) for c in n.value)
            if total > MAX_YAML_VALUES:
                raise ValueError(f"YAML aliases expand to more than {MAX_YAML_VALUES} values")
            sizes[key] = total
            return total

        size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


MAX_DEPTH = 64  # settings files nest a few levels; deeper structures overflow the stack of whatever walks them


def check_depth(doc, limit: int = MAX_DEPTH) -> None:
    """Raise ValueError if ``doc`` (parsed JSON/YAML) nests lists/dicts deeper than ``limit`` (iterative walk)."""
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                raise ValueError(f"nested more than {limit} levels deep")
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
