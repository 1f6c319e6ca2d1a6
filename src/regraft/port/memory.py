"""Peak resident memory of this process, overall and per phase (Linux /proc; elsewhere ru_maxrss)."""

from __future__ import annotations

import resource


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class PhaseMemory:
    """Peak RSS per phase: ``with mem.phase("teacher"): ...`` resets the high-water mark on entry (VmHWM via
    /proc/self/clear_refs) and records {"start_mb", "peak_mb"} on exit. ``peak()``: the max over phases (and over
    what was measured before the first phase, when ``carry`` is given). Linux; elsewhere ru_maxrss (no reset)."""

    def __init__(self, carry: float = 0.0):
        self.phases: dict[str, dict] = {}
        self._carry = carry

    def phase(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def cm():
            import gc

            gc.collect()
            start = rss_mb()
            reset_peak_rss()
            try:
                yield
            finally:
                self.phases[name] = {"start_mb": start, "peak_mb": peak_rss_mb()}

        return cm()

    def peak(self) -> float:
        return max([self._carry] + [p["peak_mb"] for p in self.phases.values()])

    def to_dict(self, mode: str, note: str = "") -> dict:
        d = {"mode": mode, "peak_rss_mb_by_phase": self.phases, "peak_rss_mb": self.peak()}
        if note:
            d["note"] = note
        return d
