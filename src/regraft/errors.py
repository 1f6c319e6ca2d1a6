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


# -- raised by one area each (their modules import them from here) --------------------------------------------------


# regraft/catalog/shapes.py
class UnknownField(KeyError):
    """A config field the expression needs is not known (e.g. a `partial` catalog entry). Internal: the shape
    evaluator's callers turn it into "unknown", it never reaches the user (so not a RegraftError)."""


# regraft/rag/template.py
class TemplateError(InputError):
    """A chat template that cannot be compiled or rendered (names the template and the line)."""

    def __init__(self, name: str, line: int | None, what: str):
        self.template_name, self.line, self.what = name, line, what
        where = f"{name}, line {line}" if line else name
        super().__init__(f"Chat template {where}: {what}. Expected a Jinja chat template as transformers renders it; "
                         "fix the template (chat_template.jinja or tokenizer_config.json of the model folder).")


# regraft/hybrid/contract.py
class ContractError(RegraftError):
    """The small model and the master do not accept the same requests."""


# regraft/hybrid/chat_request.py
class RequestError(InputError):
    """A request the OpenAI API would reject: HTTP 400 with this message, param and code."""

    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value",
                 status: int = 400, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type_

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# regraft/hybrid/orchestrator.py
class OversizeError(InputError):
    """The request does not fit the models' context budget."""


# regraft/hybrid/tools.py
class CalculatorError(InputError):
    """The calculator tool cannot evaluate an expression (syntax, a name it does not allow, a size limit)."""


# regraft/hybrid/store.py
class StoreMissingError(InputError):
    """The store named on the command line does not exist or was never indexed."""


# regraft/hybrid/backends.py
class BackendError(RegraftError):
    """A model endpoint could not give a usable answer (after retries)."""

    def __init__(self, url: str, kind: str, message: str, status: int | None = None, attempts: int = 1):
        self.url, self.kind, self.status, self.attempts = url, kind, status, attempts
        super().__init__(f"backend {url}: {message}")


# regraft/verify/__init__.py
class PeftLoadError(RegraftError):
    """PEFT refused to load an adapter on the base (its message, first lines); verify turns it into a finding."""


# port/api.py
class PortBlocked(RegraftError):
    """Some modules have no exact move and --allow-lossy was not given (exit 1, plan printed)."""

    exit_code = 1

    def __init__(self, plan):
        self.plan = plan
        rows = plan.blocked
        super().__init__(f"{len(rows)} module(s) cannot be moved exactly (e.g. {rows[0].module}: {rows[0].reason}). "
                         "See the plan; --allow-lossy drops them and reports how much is lost.")


# regraft/checks/namespaces.py
class NamespaceError(InputError):
    """Adapter keys cannot be renamed exactly between two model-class namespaces (regraft.checks.namespaces)."""


# regraft/numbers.py
class NumberError(FileFormatError):
    """A value that should be a number is not a plain bounded decimal."""


# regraft/verify/endpoint.py
class EndpointError(RegraftError):
    """The endpoint cannot be probed (unreachable, unknown model name, not an OpenAI-compatible server)."""
