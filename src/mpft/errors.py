"""Typed exceptions. Library code raises these; only the CLI maps them to exit codes.

Every error carries a message a user can act on (what is wrong, where, what to do).
"""

from __future__ import annotations


class MpftError(Exception):
    """Base class of every error mpft raises on purpose."""

    #: Process exit code the CLI uses for this error class.
    exit_code: int = 1


class ConfigError(MpftError, ValueError):
    """An option or setting is invalid (bad value, unknown name, incompatible combination)."""

    exit_code = 2


class DataError(MpftError):
    """A dataset cannot be used: missing folder, no images, a single class, unknown layout."""

    exit_code = 3


class ImageDecodeError(DataError):
    """One image cannot be decoded. Carries the path (or ``"<bytes>"``) and the reason."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class BackboneError(MpftError):
    """A backbone cannot be loaded (unknown spec, failed download, bad conversion)."""

    exit_code = 4


class BackboneNotAvailableError(BackboneError):
    """The weights are not cached and cannot be fetched here. The message names the command to run."""


class WeightsIntegrityError(BackboneError):
    """A weights file does not have the expected sha256 (corrupt, truncated or a different model)."""


class CheckpointError(MpftError):
    """A detector checkpoint cannot be read or does not match the model it should load into."""

    exit_code = 5


class ServeError(MpftError):
    """The server cannot start (bad host/port, model failed to load)."""

    exit_code = 6
