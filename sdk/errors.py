"""The one error tree of sealroom, with stable codes.

Every error carries a stable ``code`` (``E_SIGNATURE``, ``E_INPUT``, ...) that is part of the
public contract: receipts, HTTP bodies and CLI exit codes are derived from it. ``str(error)``
is a short technical message; ``diagnostics()`` is a longer message for people, used only by
the CLI. The library never prints.

Messages must never contain data values (cell contents, plaintext, keys): callers build them
from names, digests and counts only.
"""

from __future__ import annotations

from typing import ClassVar


class SealroomError(Exception):
    """Base class of every error sealroom raises on purpose."""

    code: ClassVar[str] = "E_INTERNAL"
    exit_code: ClassVar[int] = 1
    hint: ClassVar[str] = ""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip().splitlines()[0]

    def diagnostics(self) -> str:
        """A human-readable, one-paragraph explanation (for the CLI only)."""
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class InputError(SealroomError):
    """Malformed, oversized or out-of-policy input."""

    code = "E_INPUT"
    exit_code = 2


class SignatureError(SealroomError):
    """A signature, threshold or approval check failed."""

    code = "E_SIGNATURE"
    exit_code = 3


class DecryptionError(SealroomError):
    """Decryption failed.

    Deliberately opaque: wrong key, tampered, truncated, reordered or foreign chunks all give
    this same error with the same message, so the failure says nothing about the data.
    """

    code = "E_DECRYPT"
    exit_code = 4

    def __init__(self, message: str = "") -> None:
        super().__init__("decryption failed")


class AttestationError(SealroomError):
    """The worker's attestation is missing, invalid, or not accepted by the manifest.

    ``step`` names the verification step that failed (``parse``, ``signature``, ``chain``,
    ``expiry``, ``debug``, ``measurement``, ``report_data``, ...), so an auditor and a test can
    tell a bad chain from a bad measurement; it is part of the message too.
    """

    code = "E_ATTESTATION"
    exit_code = 5

    def __init__(self, message: str = "", *, step: str = "policy") -> None:
        super().__init__(message)
        self.step = step


class LogError(SealroomError):
    """The room log is inconsistent: bad proof, rollback, fork or tampered entry."""

    code = "E_LOG"
    exit_code = 6


class PrivacyError(SealroomError):
    """A privacy rule refused the run (budget exhausted, policy violated)."""

    code = "E_PRIVACY"
    exit_code = 7


class QueryRejectedError(SealroomError):
    """The query code was rejected by the sandbox policy before it ran."""

    code = "E_QUERY_REJECTED"
    exit_code = 8


class QueryRuntimeError(SealroomError):
    """The query code raised while running."""

    code = "E_QUERY_RUNTIME"
    exit_code = 9


class ResourceError(SealroomError):
    """A resource limit was hit: time, memory, processes or output size."""

    code = "E_RESOURCE"
    exit_code = 10


class ConfigError(SealroomError):
    """A configuration or deployment setting is unsafe or invalid."""

    code = "E_CONFIG"
    exit_code = 11


class NotFoundError(SealroomError):
    """The object asked for does not exist."""

    code = "E_NOT_FOUND"
    exit_code = 12


class AuthError(SealroomError):
    """Authentication or authorization failed."""

    code = "E_AUTH"
    exit_code = 13


class ConflictError(SealroomError):
    """The request conflicts with the current state (duplicate, wrong order)."""

    code = "E_CONFLICT"
    exit_code = 14


class NetworkError(SealroomError):
    """The coordinator could not be reached or answered unexpectedly."""

    code = "E_NETWORK"
    exit_code = 15


ERRORS_BY_CODE: dict[str, type[SealroomError]] = {
    cls.code: cls
    for cls in (
        SealroomError,
        InputError,
        SignatureError,
        DecryptionError,
        AttestationError,
        LogError,
        PrivacyError,
        QueryRejectedError,
        QueryRuntimeError,
        ResourceError,
        ConfigError,
        NotFoundError,
        AuthError,
        ConflictError,
        NetworkError,
    )
}


def error_for_code(code: str, message: str = "") -> SealroomError:
    """Build the error of the class registered for ``code`` (the base class when unknown)."""
    cls = ERRORS_BY_CODE.get(code, SealroomError)
    return cls(message)


def quote_user(text: object, limit: int = 60) -> str:
    """``text`` (user content: a column name, a file's first bytes) fit for an error message:
    at most ``limit`` characters, non-printable characters escaped (``\\n``, ``\\x00``,
    ``\\u200b``), in single quotes, with ``…`` when cut. Never use it for data values (cells):
    those never go into errors at all."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    cut = raw[:limit]
    escaped = "".join(
        c if c.isprintable() and c not in "'\\" else repr(c)[1:-1] if c != "'" else "\\'"
        for c in cut
    )
    return "'" + escaped + ("…" if len(raw) > limit else "") + "'"
