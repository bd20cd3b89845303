"""Domain errors the API maps to HTTP. Raised by service code; carries no HTTP types itself."""

from __future__ import annotations


class KuzetError(Exception):
    """Base for errors a client caused; `code` is stable, the message says what to do."""

    code = "bad_request"


class BadInput(KuzetError):
    code = "bad_input"


class NotFoundError(KuzetError):
    code = "not_found"


class Unauthorized(KuzetError):
    code = "unauthorized"


class LinkRefused(Unauthorized):
    """A check-in link that cannot open a session now; `reason` is one of unknown, used, expired,
    not_yet, closed (the check-in page explains each to the person)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Forbidden(KuzetError):
    code = "forbidden"


class Conflict(KuzetError):
    code = "conflict"


class TooLarge(KuzetError):
    code = "too_large"


class UnsupportedMediaType(KuzetError):
    code = "unsupported_media_type"


class Gone(KuzetError):
    code = "gone"


class TooManyRequests(KuzetError):
    """Too many failed attempts (login backoff): try again after the time the message names."""

    code = "too_many_requests"


class ServiceUnavailable(KuzetError):
    """A dependency (worker pool, engine) is down: a technical failure, retry later; never the client's fault."""

    code = "service_unavailable"


class ServerBusy(ServiceUnavailable):
    """This node already serves as many sessions as it can without losing frames: try again after
    `retry_after_s` seconds (nothing was spent: a one-time link stays valid)."""

    code = "busy"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


HTTP_STATUS: dict[type[KuzetError], int] = {
    BadInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFoundError: 404,
    Conflict: 409,
    Gone: 410,
    TooLarge: 413,
    TooManyRequests: 429,
    ServiceUnavailable: 503,
    UnsupportedMediaType: 415,
    KuzetError: 400,
}


def status_for(exc: KuzetError) -> int:
    """HTTP status for a domain error (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 400


def headers_for(exc: KuzetError) -> dict[str, str]:
    """Response headers a domain error implies (Retry-After for a busy node)."""
    if isinstance(exc, ServerBusy):
        return {"Retry-After": str(exc.retry_after_s)}
    return {}
