"""Property-based fuzz of the whole OpenAPI (schemathesis + hypothesis): a fixed, small number of
generated requests per operation, for every role and anonymously, on SQLite and on PostgreSQL.
Nothing may answer a server error (>= 500), 503 included: the app runs with every dependency up and
far below its admission limit (`media.max_live_sessions`; fuzzed WHIP offers carry no valid link and
are refused before admission), so none of the documented 503s (store, signer, database or analysis
queue unreachable, node busy) has a cause here and any 503 is a bug.

Bounded on purpose (`EXAMPLES_PER_OPERATION`, derandomised): it runs in CI in a couple of minutes;
raise KUZET_FUZZ_EXAMPLES for a deeper local run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Err

from media_server.db.enums import Role
from tests.api.conftest import ROLES, Api
from tests.security.conftest import PROFILES, database_for, running_api, settings_for

EXAMPLES_PER_OPERATION = int(os.environ.get("KUZET_FUZZ_EXAMPLES", "3"))
# Logging out would revoke the token the rest of the run uses: fuzz it last.
LAST = {("POST", "/api/v1/auth/logout")}


@pytest.fixture(scope="module", params=PROFILES)
def fuzz_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app per database profile for the whole module (an app per example would take hours)."""
    with database_for(str(request.param)) as url:
        data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "var"
        with running_api(settings_for(Path(data_dir), url)) as api:
            yield api


def _operations(api: Api) -> list[Any]:
    schema = schemathesis.openapi.from_dict(api.client.app.openapi())  # type: ignore[attr-defined]
    ops = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # our own schema must load whole
        ops.append(result.ok())
    return sorted(ops, key=lambda op: ((op.method.upper(), op.path) in LAST, op.path, op.method))


def _send(api: Api, case: Any, headers: dict[str, str]) -> int:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers"),
        "params": kwargs.get("params"),
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        request["content"] = data
    elif data is not None:
        request["data"] = data
    if kwargs.get("files"):
        request["files"] = kwargs["files"]
    api.client.cookies.clear()
    for name, value in (kwargs.get("cookies") or {}).items():
        api.client.cookies.set(name, str(value))
    return int(api.client.request(**request).status_code)


@pytest.mark.parametrize("role", [None, *ROLES], ids=lambda r: r.value if r else "anonymous")
def test_no_operation_answers_a_server_error(fuzz_api: Api, role: Role | None) -> None:
    headers = fuzz_api.as_(role) if role else {}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = _operations(fuzz_api)
    assert len(operations) >= 25

    def run(op: Any) -> None:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            case = data.draw(op.as_strategy())
            status = _send(fuzz_api, case, headers)
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {status}: {case.as_curl_command()}")

        fuzz()

    for op in operations:
        run(op)
    assert sum(statuses.values()) >= len(operations)
    assert not failures, "\n".join(failures[:20]) + f"\nstatuses: {sorted(statuses.items())}"
