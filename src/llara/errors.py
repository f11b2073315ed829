"""The exception types that report a problem with what the user gave (a setting, a file), not a bug.

They live below every stage and below ``llara.settings`` / ``llara.cli_errors`` so that any module can
raise or catch them without importing the module that usually raises them (which would run the import
graph upward or in a circle). Each is also importable from its historical home, as the same class:
``llara.settings.ConfigError``, ``llara.data.download.ChecksumError``,
``llara.data.parse.MalformedInputError``, ``llara.data.safe_pickle.{UnsafePickleError,PickleFormatError}``.
``llara.cli_errors.expected_errors`` lists them (one-line errors, exit status 2).
"""

from __future__ import annotations

import pickle


class ConfigError(ValueError):
    """A config value the schema or a cross-key rule refuses; ``key`` is its dotted config key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key {key}: {message}" if key else f"config: {message}")


class ChecksumError(ValueError):
    """A file or archive member whose sha256 (or size) differs from its pin."""


class MalformedInputError(ValueError):
    """A raw file whose content does not match its documented format."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global or opcode outside what LLaRA's DataFrames need."""


class PickleFormatError(ValueError):
    """The pickle is not a DataFrame of the expected shape, or holds a value of the wrong type."""


__all__ = ["ConfigError", "ChecksumError", "MalformedInputError", "UnsafePickleError", "PickleFormatError"]
