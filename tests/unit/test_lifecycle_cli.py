"""`kuzet persons end-supervision|erase` and `kuzet retention report|verify-erasure` on the embedded default."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from media_server.cli import main
from media_server.db import audit
from media_server.db.enums import DeviceKind, PersonStatus, ZoneKind
from media_server.db.models import AuditEntry, Device, LocationZone, Person
from media_server.services import build_services
from media_server.settings import Settings


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {"KUZET_DATA_DIR": str(tmp_path / "var")}


def _seed(data_dir: str) -> str:
    services = build_services(Settings(data_dir=Path(data_dir)))
    try:
        with services.sessions.begin() as db:
            person = Person(external_ref="KZ-CLI-1", display_name="Cli Person")
            db.add(person)
            db.flush()
            db.add(
                Device(serial="AV-CLI", kind=DeviceKind.AV_STATION, person_id=person.id, key_hash="0" * 64)
            )
            db.add(
                LocationZone(
                    person_id=person.id,
                    kind=ZoneKind.EXCLUSION,
                    label="a third party's address",
                    geometry={"type": "circle", "lat": 43.2, "lon": 76.9, "radius_m": 100},
                    hours=None,
                )
            )
            audit.append(db, "test", "person_created", "person", person.id, {})
            return person.id
    finally:
        services.workers.shutdown()
        services.engine.dispose()


def test_cli_ends_supervision_reports_erases_and_verifies(env: dict[str, str]) -> None:
    pid = _seed(env["KUZET_DATA_DIR"])
    runner = CliRunner()
    ended = (date.today() - timedelta(days=2)).isoformat()
    r = runner.invoke(
        main,
        ["persons", "end-supervision", "--person", pid, "--ended-on", ended, "--reason", "served"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["status"] == "supervision_ended" and out["devices_revoked"] == 1

    r = runner.invoke(main, ["retention", "report", "--json"], env=env)
    assert r.exit_code == 0, r.output
    [held] = json.loads(r.output)["persons"]
    assert held["person_id"] == pid and held["supervision_ended_on"] == ended and "erase-due" in held["why"]
    assert held["held"]["location_zones"] == 1 and "1 zone(s)" in held["why"]
    r = runner.invoke(main, ["retention", "report"], env=env)
    assert r.exit_code == 0 and "location: 0 position(s), 0 signed batch(es)" in r.output, r.output
    assert "0 device event(s), 0 alert(s), 1 zone(s)" in r.output

    r = runner.invoke(main, ["persons", "erase", "--person", pid, "--reason", "subject request 12"], env=env)
    assert r.exit_code == 0, r.output
    erasure_id = r.output.split("erasure=")[1].split()[0]
    r = runner.invoke(main, ["retention", "verify-erasure", erasure_id], env=env)
    assert r.exit_code == 0 and r.output.strip().endswith("ok"), r.output
    assert runner.invoke(main, ["retention", "verify-erasure", "nope"], env=env).exit_code == 1
    assert (
        runner.invoke(main, ["persons", "erase", "--person", "nope", "--reason", "x"], env=env).exit_code == 1
    )

    services = build_services(Settings(data_dir=Path(env["KUZET_DATA_DIR"])))
    try:
        with services.sessions() as db:
            assert db.get_one(Person, pid).status is PersonStatus.ERASED
            actions = db.scalars(select(AuditEntry.action).where(AuditEntry.actor == "cli")).all()
            assert {"person.supervision_ended", "person.erased"} <= set(actions)
            assert audit.verify_chain(db).ok
    finally:
        services.workers.shutdown()
        services.engine.dispose()
