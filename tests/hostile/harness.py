"""Outcome classification shared by the hostile-input tests and ``bench/fuzz.py``.

A reader run on a generated input may end in exactly two ways: success, or a ``RegraftError`` whose message is
one line. Anything else (another exception, a hang past the time limit) is a bug. ``run_case`` classifies one run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from regraft.errors import RegraftError

OK, REGRAFT_ERROR, OTHER, TIMEOUT = "ok", "regraft-error", "other-exception", "timeout"
OUTCOMES = (OK, REGRAFT_ERROR, OTHER, TIMEOUT)
CASE_TIMEOUT = float(os.environ.get("REGRAFT_FUZZ_TIMEOUT", "30"))  # seconds per case (a hang, not a slow case)
MAX_MESSAGE = 4000  # a "one-line" message that quotes a whole hostile file is not one line


class Hang(BaseException):
    """Raised by the per-case alarm (BaseException so that a reader's ``except Exception`` cannot swallow it)."""


class Bug(AssertionError):
    """A hostile input produced something other than success or a one-line RegraftError."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_TIMEOUT):
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # again in 1 s if this one is swallowed (e.g. in a gc callback)
        raise Hang(f"no result after {seconds:g}s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def message_ok(e: RegraftError) -> str | None:
    """None if the error makes a proper one-line message, else what is wrong with it.

    The CLI prints ``" ".join(str(e).split())`` (regraft.cli.main._one_line), so a message is one line once its
    whitespace is collapsed; it must not be empty, nor quote half a hostile file."""
    msg = " ".join(str(e).split())
    if not msg:
        return "empty message"
    if len(msg) > MAX_MESSAGE:
        return f"message is {len(msg)} characters long"
    return None


def run_case(fn, *args, timeout: float = CASE_TIMEOUT, **kwargs) -> tuple[str, BaseException | None]:
    """Run ``fn`` and classify: (ok|regraft-error|other-exception|timeout, the exception or None)."""
    try:
        with time_limit(timeout):
            fn(*args, **kwargs)
    except Hang as e:
        return TIMEOUT, e
    except RegraftError as e:
        return (REGRAFT_ERROR, e) if message_ok(e) is None else (OTHER, e)
    except RecursionError as e:  # would be a bug too, kept apart for clarity
        return OTHER, e
    except Exception as e:  # noqa: BLE001 - the point is to catch anything else
        return OTHER, e
    return OK, None


def check_case(fn, *args, timeout: float = CASE_TIMEOUT, **kwargs) -> str:
    """``run_case`` for tests: return the outcome, raise ``Bug`` (with the original as cause) for anything else."""
    outcome, exc = run_case(fn, *args, timeout=timeout, **kwargs)
    if outcome == OTHER:
        if isinstance(exc, RegraftError):
            raise Bug(f"RegraftError with a bad message ({message_ok(exc)}): {str(exc)[:300]!r}") from exc
        raise Bug(f"{type(exc).__name__} escaped instead of a RegraftError: {str(exc)[:300]}") from exc
    if outcome == TIMEOUT:
        raise Bug(f"hang: {exc}") from exc
    return outcome


@contextlib.contextmanager
def scratch():
    """A fresh temporary folder per generated case (hypothesis cannot use function-scoped tmp_path)."""
    d = Path(tempfile.mkdtemp(prefix="regraft-hostile-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
