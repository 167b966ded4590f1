"""Exceptions grouped by what the caller must do.

Every error the engine raises for bad input is an :class:`EngineError`. Its message names
what was wrong (a file and line, a YAML path, a field) and its ``hint`` says how to fix it.
The CLI prints both and exits with the error's ``exit_code``: 1 for a problem found in the
data or the run, 2 for a usage or configuration error.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: a clear, user-facing error with an exit code and an optional fix."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(EngineError):
    """A strategy file, option or parameter is invalid. Fix the config and run again."""

    exit_code = 2


class UsageError(EngineError):
    """The command line was used wrongly (bad option value, unknown interval, ...)."""

    exit_code = 2


class DataError(EngineError):
    """Input data is malformed, inconsistent or missing. Nothing was written."""

    exit_code = 1


class RunError(EngineError):
    """A run could not complete (for example a model failed to train)."""

    exit_code = 1


class ExchangeError(EngineError):
    """The exchange (or the simulator) rejected a request or could not be reached."""

    exit_code = 1
