"""Bad input to every endpoint gets a clear 4xx, never a 500: each route of the app is called with
missing, garbage and oversized input, as every role and anonymously."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from media_server.api import routers
from media_server.db.enums import Role
from tests.api.conftest import Api

GARBAGE_BODIES: list[dict[str, object]] = [
    {},
    {"content": b"\x00\xff garbage", "headers": {"content-type": "application/json"}},
    {"json": {"unexpected": ["x" * 5000]}},
    {"json": [1, 2, 3]},
    {"content": b"--x\r\nbroken multipart", "headers": {"content-type": "multipart/form-data; boundary=x"}},
    {"files": {"images": ("a.jpg", b"not an image", "image/jpeg")}},
    {"content": b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "headers": {"content-type": "application/sdp"}},
]
PATH_VALUES = ["nonexistent", "../../etc/passwd", "0" * 300]


def _routes() -> list[tuple[str, str]]:
    out = []
    for router in routers():
        for route in router.routes:
            if isinstance(route, APIRoute):
                out.extend((method, route.path) for method in sorted(route.methods - {"HEAD", "OPTIONS"}))
    return out


def _fill(path: str, value: str) -> str:
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + value + path[end + 1 :]
    return path


@pytest.mark.parametrize("role", [None, Role.ADMIN, Role.OFFICER, Role.REVIEWER, Role.AUDITOR, Role.PERSON])
def test_every_endpoint_answers_bad_input_without_a_server_error(api: Api, role: Role | None) -> None:
    headers = api.as_(role) if role else {}
    routes = _routes()
    assert len(routes) > 25, routes
    failures = []
    for method, template in routes:
        for value in PATH_VALUES:
            path = _fill(template, value)
            for body in GARBAGE_BODIES:
                kwargs = dict(body)
                kwargs["headers"] = {**headers, **dict(body.get("headers", {}))}  # type: ignore[arg-type]
                r = api.client.request(method, path, **kwargs)  # type: ignore[arg-type]
                if r.status_code >= 500 and r.status_code != 503:
                    failures.append(f"{method} {path} {list(body)} -> {r.status_code} {r.text[:200]}")
                elif r.status_code >= 400 and r.headers.get("content-type", "").startswith(
                    "application/json"
                ):
                    payload = r.json()
                    if not (payload.get("message") or payload.get("error")):
                        failures.append(f"{method} {path}: {r.status_code} without a message")
    assert not failures, "\n".join(failures[:20])
