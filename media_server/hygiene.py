"""Input hygiene and database failures, in one place, the same on SQLite and PostgreSQL.

SQLite stores a NUL character or a 30-digit integer without complaint; PostgreSQL refuses both (and
psycopg cannot even encode a lone surrogate), which used to surface as 500s on the production profile
only. Here:

- a path or query value with a control character (NUL included) is refused before routing: 400;
- every statement's parameters are checked at the database boundary: text with NUL or a lone surrogate
  and integers outside signed 64 bits are refused on both databases alike: 422, before anything is written;
- database failures map to HTTP: a lost connection, a locked SQLite file, a pool timeout -> 503 with
  Retry-After (retrying helps); a value the database refuses -> 422; a unique clash -> 409. A dropped
  pooled connection is invalidated by SQLAlchemy, and `pool_pre_ping` (db/engine.py) replaces stale ones
  at checkout, so the client's retry lands on a fresh connection.

`install(app)` wires all three; `guard_engine(engine)` adds the parameter check to any other engine.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from starlette.types import ASGIApp, Receive, Scope, Send

from media_server.errors import KuzetError
from media_server.services import Services

log = logging.getLogger("kuzet.hygiene")

# An INTEGER column (audit_log.id) is 32-bit on PostgreSQL; bound query parameters compared with one.
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# C0 controls and DEL never belong in a path segment or a query value.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_GUARDED = "_kuzet_hygiene_guarded"


class InvalidValue(KuzetError):
    """A value no database column can hold (NUL, lone surrogate, integer beyond 64 bits)."""

    code = "invalid_value"


def check_value(value: Any) -> None:
    """Raise InvalidValue for text with NUL or lone surrogates, or an integer outside signed 64 bits."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidValue("text may not contain the NUL character (\\u0000)")
        if _SURROGATE.search(value):
            raise InvalidValue("text contains an unpaired UTF-16 surrogate (not valid Unicode)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidValue(f"integer out of range (allowed {INT64_MIN}..{INT64_MAX})")


def _check_parameters(parameters: Any) -> None:
    if isinstance(parameters, dict):
        values: Iterable[Any] = parameters.values()
    elif isinstance(parameters, list | tuple):
        values = parameters
    else:
        return
    for value in values:
        if isinstance(value, dict | list | tuple):
            _check_parameters(value)  # executemany: a list of parameter sets
        else:
            check_value(value)


def guard_engine(engine: Engine) -> None:
    """Check every statement's parameters on `engine` (idempotent)."""
    if getattr(engine, _GUARDED, False):
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _before(
        _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        _check_parameters(parameters)

    setattr(engine, _GUARDED, True)


class RejectControlCharacters:
    """ASGI middleware: 400 for a control character in the (decoded) path or in a query value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
            query: bytes = scope.get("query_string", b"")
            bad = _CONTROL.search(unquote_to_bytes(raw_path)) or _CONTROL.search(
                unquote_to_bytes(query.replace(b"+", b" "))
            )
            if bad is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = JSONResponse(
                    {
                        "error": "bad_input",
                        "message": "the path or query contains a control character (e.g. NUL)",
                    },
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _retry_after(request: Request) -> str:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        return str(services.settings.database.retry_after_s)
    return "1"


def install(app: FastAPI) -> None:
    """Add the path/query check, the database parameter guard and the database error mapping to `app`."""
    app.add_middleware(RejectControlCharacters)

    async def guard(services: Services) -> None:
        guard_engine(services.engine)

    app.state.startup_hooks.append(guard)

    @app.exception_handler(InvalidValue)
    async def invalid_value(_: Request, exc: InvalidValue) -> JSONResponse:
        return _error(422, exc.code, str(exc))

    @app.exception_handler(sa_exc.IntegrityError)
    async def integrity(_: Request, exc: sa_exc.IntegrityError) -> JSONResponse:
        log.warning("unique or reference clash", extra={"error": str(exc.orig)[:300]})
        return _error(409, "conflict", "this conflicts with an existing record; reload and try again")

    @app.exception_handler(sa_exc.DataError)
    async def data_error(_: Request, exc: sa_exc.DataError) -> JSONResponse:
        log.warning("the database refused a value", extra={"error": str(exc.orig)[:300]})
        return _error(422, "invalid_value", "a value is too long or out of range for what it is stored in")

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable", extra={"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return _error(
            503,
            "database_unavailable",
            "the database is unavailable; try again shortly",
            headers={"Retry-After": _retry_after(request)},
        )

    # A lost or refused connection, a locked SQLite file, a pool exhausted or a server-side abort: the
    # same request will succeed on retry. ProgrammingError stays a 500: it is our bug, not an outage.
    for cls in (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.InternalError,
        sa_exc.TimeoutError,
        sa_exc.DisconnectionError,
    ):
        app.add_exception_handler(cls, unavailable)

    @app.exception_handler(sa_exc.DBAPIError)
    async def other_dbapi(request: Request, exc: sa_exc.DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await unavailable(request, exc)
        log.exception("unexpected database error", exc_info=exc)
        return _error(500, "internal_error", "an unexpected database error was logged")
