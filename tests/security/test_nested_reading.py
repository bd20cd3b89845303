"""Item 1: a deeply nested reading is malformed input (400), never a server error."""

from __future__ import annotations

import pytest

from sobriety.reading import parse_canonical
from tests.api.conftest import Api

BREATH = "/api/v1/breath-tests"


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_parse_canonical_rejects_deep_nesting(depth: int) -> None:
    assert parse_canonical(b"[" * depth + b"]" * depth) is None
    assert parse_canonical(b'{"a":' + b"[" * depth + b"]" * depth + b"}") is None


def test_parse_canonical_still_accepts_a_canonical_object() -> None:
    assert parse_canonical(b'{"a":[[1]],"b":"x"}') == {"a": [[1]], "b": "x"}


@pytest.mark.parametrize(
    "reading",
    [b"[" * 5000 + b"]" * 5000, b'{"device_serial":' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["array", "in-object"],
)
def test_anonymous_nested_reading_gets_400(api: Api, reading: bytes) -> None:
    r = api.client.post(
        BREATH,
        files={"reading": ("reading.json", reading, "application/json"), "signature": (None, "AAAA")},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "not_canonical"
