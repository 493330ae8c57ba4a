"""Who is to blame, and what to send back.

Two kinds of failure, as in h11 and wsproto:

- :class:`RemoteProtocolError` -- the peer sent something we refuse. It carries
  everything the error response needs (code, human message, JSON pointer of the
  bad field, every field error when there are several), so the caller only
  serializes it.
- :class:`LocalProtocolError` -- our own code misused this package (a bug on
  this side). It is never sent to a peer.

Codes are those of PROTOCOL.md section 2.

An error response lists at most :data:`MAX_LISTED_ERRORS` field errors and
counts the rest in ``errors_omitted``: a request of a few kilobytes must not
buy an answer of hundreds (each field error repeats its path and a sentence).
The exception itself keeps every error, so moving their paths under a prefix
(``/payload/params``) loses none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_LISTED_ERRORS = 50
"""Field errors listed in one error payload; the rest are counted in ``errors_omitted``."""


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_ACTION = "unknown_action"
    INVALID_PARAMS = "invalid_params"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RESOURCE_LIMIT = "resource_limit"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    INTERNAL = "internal"


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``path`` is a JSON pointer ("" is the whole document)."""

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class LocalProtocolError(Exception):
    """This side misused the protocol package: a bug here, never reported to a peer."""


@dataclass(eq=False)
class RemoteProtocolError(Exception):
    """The peer sent something we refuse; ``to_payload()`` is the error response payload."""

    code: ErrorCode
    message: str
    path: str | None = None
    errors: tuple[FieldError, ...] = field(default=())

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.path is None and self.errors:
            self.path = self.errors[0].path

    @classmethod
    def from_field_errors(cls, code: ErrorCode, errors: list[FieldError] | tuple[FieldError, ...]) -> RemoteProtocolError:
        """One exception reporting every field error; the first one names the path."""
        if not errors:
            raise LocalProtocolError("from_field_errors needs at least one error")
        errors = tuple(errors)
        if len(errors) == 1:
            message = f"{errors[0].path or '/'}: {errors[0].message}"
        else:
            message = f"{len(errors)} errors; first: {errors[0].path or '/'}: {errors[0].message}"
        return cls(code, message, errors[0].path, errors)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"action": "error", "code": self.code.value, "message": self.message}
        if self.path is not None:
            payload["path"] = self.path
        if self.errors:
            payload["errors"] = [e.to_json() for e in self.errors[:MAX_LISTED_ERRORS]]
            if len(self.errors) > MAX_LISTED_ERRORS:
                payload["errors_omitted"] = len(self.errors) - MAX_LISTED_ERRORS
        return payload

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
