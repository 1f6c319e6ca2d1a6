"""Every exception regraft raises on purpose.

Messages follow one template: what could not be done, on which file, why, what was expected, what to do.
Problems *about compatibility* are findings, not exceptions; exceptions mean "could not do the job".
The CLI prints ``str(error)`` on one line and exits 2.
"""

from __future__ import annotations


class RegraftError(Exception):
    """Base class: the CLI turns these into one line on stderr and exit code 2."""

    exit_code = 2


class InputError(RegraftError, ValueError):
    """A file or argument the user gave is missing, malformed or of the wrong kind."""


class FileFormatError(InputError):
    """A file exists but its content is not what it should be (bad JSON, truncated header, ...)."""


class UnknownModelError(InputError, KeyError):
    """A model name resolves to nothing: not a directory, not in the HF cache, not in the catalog, not reachable."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class OfflineError(RegraftError, ConnectionError):
    """The Hugging Face Hub was needed and cannot be reached."""


class UnsafeInputError(InputError):
    """The input would need code execution (pickle, remote code) or escapes the folder the user named."""


class OutputExistsError(RegraftError, FileExistsError):
    """An output path exists and --force was not given."""


class MissingDependencyError(RegraftError, ImportError):
    """An optional extra is needed for this command."""

    def __init__(self, what: str, extra: str, package: str | None = None):
        pkg = package or extra
        super().__init__(
            f"{what} needs the optional dependency '{pkg}', which is not installed. "
            f"Install it with: pip install 'regraft[{extra}]'"
            + (" (install torch first: pip install torch==2.13.0)" if extra == "torch" else "")
        )


def need(module: str, what: str, extra: str):
    """Import an optional module or raise MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(what, extra, module.split(".")[0]) from e


class NamespaceError(InputError):
    """Adapter keys cannot be renamed exactly between two model-class namespaces (regraft.checks.namespaces)."""
