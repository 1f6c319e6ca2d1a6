"""Where regraft writes: one guard and one commit for every output (adapters, GGUF files and their side reports,
serving configs, RAG setups, indexes, drift/verify reports, calibrated policies).

``guard(out, inputs, force)`` decides whether a path may be written: it resolves links (a dangling one too) and
refuses an output that is, contains or is inside anything the command read, a link as the output name, an
existing output without ``force``, and (with ``force``) an existing folder that is not a previous regraft output.

``staged(out, inputs, force)`` is the context manager every writer uses: it guards, hands out a temporary name
next to the destination (a file or a folder), and on success commits it without a window: a file with one
``os.replace``; a folder with ``renameat2(RENAME_EXCHANGE)`` (Linux), else via an aside name that the next run on
the same path restores when a kill left the destination missing. On failure nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import platform
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from regraft.errors import InputError, OutputExistsError

TMP_TAG = ".regraft-tmp-"
OLD_TAG = ".regraft-old"
# files that mark a folder as something regraft wrote (or a PEFT adapter it may replace with --force)
_OUTPUT_MARKERS = ("adapter_config.json", "regraft_port.json", "regraft_build.json", "regraft_store.json",
                   "regraft.json")
_WALK_CAP = 20_000  # entries looked at per input folder when collecting where its links point


# -- what the command read ------------------------------------------------------------------------------------------

_READ: dict[str, None] = {}  # every file a reader opened in this process (ordered set, capped)
_READ_CAP = 10_000


def note_read(path: str | os.PathLike) -> None:
    """Readers call this for every file they open, so that ``guard`` refuses an output over it even when the
    command did not pass it in ``inputs``."""
    if len(_READ) < _READ_CAP:
        with contextlib.suppress(TypeError, ValueError):
            _READ[os.fspath(path)] = None


def forget_reads() -> None:
    _READ.clear()


def _real(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(p))))


def _input_paths(inputs: Iterable) -> list[tuple[str, Path]]:
    """(as given, real path) for every input, plus where links inside input folders point (a HF cache snapshot's
    blobs) and the local base folder an adapter names."""
    out: list[tuple[str, Path]] = []
    seen: set[Path] = set()

    def add(label: str, p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append((label, p))

    for i in inputs:
        if i is None or (isinstance(i, str) and not i):
            continue
        label = os.fspath(i)
        if "\0" in label or not os.path.lexists(os.path.expanduser(label)):
            continue  # a model name, not a local path
        r = _real(i)
        add(label, r)
        if not r.is_dir():
            continue
        n = 0
        for root, dirs, files in os.walk(r):
            for name in dirs + files:
                n += 1
                q = Path(root, name)
                if q.is_symlink():
                    add(f"{label} (link {name})", _real(q))
            if n > _WALK_CAP:
                break
        base = _named_base(r)
        if base is not None:
            add(f"{base} (the base model '{label}' names)", base)
    return out


def _named_base(folder: Path) -> Path | None:
    cfg = folder / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        import json

        with open(cfg, "rb") as f:
            name = json.loads(f.read(1 << 20)).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 4096:
        return None
    try:
        p = Path(name).expanduser()
        return _real(p) if p.is_dir() else None
    except (OSError, ValueError):
        return None


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


# -- the guard -------------------------------------------------------------------------------------------------------

def final_path(out: str | os.PathLike) -> Path:
    """The path a write lands on: the real parent folder plus the name (the name itself is never followed)."""
    p = Path(os.path.expanduser(os.fspath(out)))
    if p.name in ("", ".", ".."):
        p = _real(p)
    return _real(p.parent) / p.name


def guard(out: str | os.PathLike, inputs: Iterable = (), force: bool = False, *, side: Iterable[str] = (),
          kind: str = "file") -> Path:
    """Check that ``out`` (and ``out.name + s`` for each side suffix) may be written; return its final path.

    kind: "file" or "dir" (what will be written there)."""
    if out is None or os.fspath(out) == "":
        raise InputError("--out is empty: name the file or folder to write.")
    label = os.fspath(out)
    if "\0" in label:
        raise InputError("--out holds a NUL character: name a real path.")
    final = final_path(out)
    recover(final)
    targets = [(label, final)] + [(f"{label}{s}", final.with_name(final.name + s)) for s in side]
    _refuse_inputs(targets, inputs)
    if not final.parent.is_dir():
        raise InputError(f"Cannot write '{label}': the folder '{final.parent}' does not exist.")
    for tlabel, t in targets:
        if not t.exists():
            continue
        if not force:
            raise OutputExistsError(f"'{tlabel}' exists. Pass --force to replace it, or choose another --out.")
        if t is final and kind == "file" and t.is_dir():
            raise InputError(f"Cannot write '{tlabel}': it is a folder; expected a file name for --out.")
        if t is final and kind == "dir" and not t.is_dir():
            raise InputError(f"Cannot write '{tlabel}': it is a file; expected a folder name for --out.")
        if t.is_dir() and not _looks_like_output(t):
            raise InputError(f"Refusing to replace the folder '{tlabel}' with --force: it does not look like a "
                             f"regraft output (no {' / '.join(_OUTPUT_MARKERS[:2])}). Choose another --out.")
    return final


def check_not_input(out: str | os.PathLike, inputs: Iterable = ()) -> Path:
    """Only the input part of ``guard``, for outputs updated in place (a vector store): not a link, not (in) an
    input. Returns the final path."""
    final = final_path(out)
    _refuse_inputs([(os.fspath(out), final)], inputs)
    return final


def _refuse_inputs(targets: list[tuple[str, Path]], inputs: Iterable) -> None:
    ins = _input_paths([*inputs, *_READ])
    for tlabel, t in targets:
        if t.is_symlink():
            to = os.readlink(t)
            raise InputError(f"Refusing to write '{tlabel}': it is a symbolic link (to '{to}'); regraft does not "
                             "write through links. Remove the link or name the real path as --out.")
        for ilabel, i in ins:
            if _related(t, i) or (t.exists() and i.exists() and _same_file(t, i)):
                raise InputError(f"Refusing to write '{tlabel}': it is (or contains, or is inside) the input "
                                 f"'{ilabel}', which this command reads. Choose another --out.")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _looks_like_output(d: Path) -> bool:
    try:
        names = set(os.listdir(d))
    except OSError:
        return False
    return not names or any(m in names for m in _OUTPUT_MARKERS)


# -- commit ----------------------------------------------------------------------------------------------------------

def tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_TAG}{os.getpid()}")


def _aside_name(final: Path) -> Path:
    return final.with_name(f".{final.name}{OLD_TAG}")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where not available."""
    global _libc
    if os.environ.get("REGRAFT_NO_EXCHANGE") == "1" or platform.system() != "Linux":
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fa, fb = os.fsencode(a), os.fsencode(b)
        fn = getattr(_libc, "renameat2", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            rc = fn(_AT_FDCWD, fa, _AT_FDCWD, fb, _RENAME_EXCHANGE)
        else:
            nr = _SYSCALL_RENAMEAT2.get(platform.machine())
            if nr is None:
                return False
            rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(fa),
                               ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(fb), ctypes.c_uint(_RENAME_EXCHANGE))
    except (OSError, AttributeError, TypeError):
        return False
    if rc == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # kernel or file system without exchange: fall back
    raise OSError(e, os.strerror(e), os.fspath(b))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def commit(tmp: Path, final: Path) -> None:
    """Move a finished temporary file/folder onto ``final``; at every instant ``final`` is the old or the new one
    (or, without RENAME_EXCHANGE, the old one is kept aside under a fixed name that ``recover`` restores)."""
    tmp, final = Path(tmp), Path(final)
    if not os.path.lexists(final):
        os.rename(tmp, final)
        return
    if not tmp.is_dir() and not final.is_dir():
        os.replace(tmp, final)  # one rename: atomic
        return
    if _exchange(tmp, final):
        _remove(tmp)  # tmp now holds the old output
        return
    aside = _aside_name(final)
    _remove(aside)
    os.replace(final, aside)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(aside, final)
        raise
    _remove(aside)


def recover(final: Path) -> None:
    """Undo what a killed commit left: restore the aside copy when ``final`` is missing, drop it when ``final`` is
    there, and remove temporary names of processes that no longer run."""
    final = Path(final)
    aside = _aside_name(final)
    try:
        if os.path.lexists(aside):
            if os.path.lexists(final):
                _remove(aside)
            else:
                os.replace(aside, final)
        prefix = f".{final.name}{TMP_TAG}"
        if final.parent.is_dir():
            for name in os.listdir(final.parent):
                if name.startswith(prefix):
                    pid = name[len(prefix):]
                    if pid.isascii() and pid.isdecimal() and len(pid) < 10 and not _alive(int(pid)):
                        _remove(final.parent / name)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class Staged:
    """Temporary names for one output (and its side files), committed together at the end of ``staged``."""

    def __init__(self, final: Path, kind: str, side: Iterable[str]):
        self.final = final
        self.kind = kind
        self.path = tmp_name(final)
        self.sides = {s: tmp_name(final.with_name(final.name + s)) for s in side}

    def side(self, suffix: str) -> Path:
        return self.sides[suffix]

    def _cleanup(self) -> None:
        for p in [self.path, *self.sides.values()]:
            if os.path.lexists(p):
                _remove(p)


@contextlib.contextmanager
def staged(out: str | os.PathLike, inputs: Iterable = (), force: bool = False, *, kind: str = "file",
           side: Iterable[str] = (), fsync: bool = True) -> Iterator[Staged]:
    """Guard ``out``, yield a ``Staged`` whose ``path`` (and ``side(suffix)``) the writer fills; commit on
    success, remove everything on failure. ``kind="dir"``: ``path`` is created as an empty folder."""
    side = tuple(side)
    final = guard(out, inputs, force, side=side, kind=kind)
    st = Staged(final, kind, side)
    st._cleanup()
    if kind == "dir":
        st.path.mkdir()
    try:
        yield st
        if fsync:
            _fsync_tree(st.path)
        commit(st.path, final)
        for s, tmp in st.sides.items():
            if os.path.lexists(tmp):
                commit(tmp, final.with_name(final.name + s))
    except BaseException:
        st._cleanup()
        raise


def _fsync_tree(p: Path) -> None:
    paths = [p] if not p.is_dir() else [q for q in p.iterdir() if q.is_file()]
    for q in paths:
        try:
            fd = os.open(q, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def write_text(out: str | os.PathLike, text: str, inputs: Iterable = (), force: bool = False) -> Path:
    """One text file, guarded and atomic."""
    with staged(out, inputs, force) as st:
        with open(st.path, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        os.chmod(st.path, 0o644)
    return st.final


class created_dir:
    """For outputs updated in place (a vector store): remove the folder again when the command fails and the
    folder did not exist before, so a failed first run leaves no partial store."""

    def __init__(self, path: str | os.PathLike):
        self.path = final_path(path)
        self.existed = os.path.lexists(self.path)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None and not self.existed and os.path.lexists(self.path):
            _remove(self.path)
        return False
