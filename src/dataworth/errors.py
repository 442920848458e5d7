"""The exceptions and warnings dataworth raises on purpose; every message is meant for users."""

from __future__ import annotations


class DataworthError(Exception):
    """Base class of every error dataworth raises on purpose; the message is meant for users."""


class InputError(DataworthError, ValueError):
    """An argument or file content is not usable (shape, dtype, NaN/inf, unknown label, ...)."""


class FileFormatError(DataworthError):
    """A file is missing, has an unsupported extension, or is not what it claims to be."""


class DataworthWarning(UserWarning):
    """A result that is computed but should not be trusted as it is (e.g. all values equal); the
    message names the cause and the fix. The CLI prints each as one ``warning:`` line."""
