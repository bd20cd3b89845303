"""The station simulator: keys, signed multipart body, `kuzet station` commands against a local server."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from media_server.cli import main
from sobriety.config import SobrietySettings
from sobriety.reading import InMemoryDeviceRegistry, InMemoryNonceLedger, RegisteredDevice, admit_submission
from sobriety.simulator import (
    generate_key,
    load_key,
    multipart_parts,
    public_key_b64,
    save_key,
    sign_reading,
    simulated_reading,
)

S = SobrietySettings()


def test_key_round_trip(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "station.pem"
    save_key(key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_key_b64(load_key(path)) == public_key_b64(key)


def test_signed_parts_are_admitted() -> None:
    key = generate_key()
    reading = simulated_reading(serial="SIM-1", person_id="p1", brac=0.012, unit="mg/L", n_photos=3)
    body, sig = sign_reading(reading, key)
    data, files = multipart_parts(body, sig, [b"a", b"b", b"c"])
    assert data["reading"].encode("utf-8") == body and data["signature"] == sig
    assert [f[0] for f in files] == ["photo_0", "photo_1", "photo_2"]
    devices = InMemoryDeviceRegistry()
    devices.add(RegisteredDevice("SIM-1", public_key_b64(key)))
    adm = admit_submission(
        data["reading"].encode(), sig, devices, InMemoryNonceLedger(), datetime.now(UTC), S
    )
    assert adm.accepted and adm.reading is not None and len(adm.reading.photo_times) == 3


class _Station(BaseHTTPRequestHandler):
    """A stand-in for the service endpoint: parses the multipart body and runs admission on it."""

    devices: InMemoryDeviceRegistry
    ledger: InMemoryNonceLedger
    received: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        msg = email.message_from_bytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + raw, policy=email.policy.HTTP
        )
        parts = {
            p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
            for p in msg.iter_parts()
        }
        adm = admit_submission(
            parts["reading"], parts["signature"].decode(), self.devices, self.ledger, datetime.now(UTC), S
        )
        self.received.append({"path": self.path, "fields": sorted(parts)})
        out = json.dumps({"accepted": adm.accepted, "codes": [c.code for c in adm.checks]}).encode()
        self.send_response(201 if adm.accepted else 409)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def station_server() -> Iterator[tuple[str, type[_Station]]]:
    handler = type(
        "Handler",
        (_Station,),
        {"devices": InMemoryDeviceRegistry(), "ledger": InMemoryNonceLedger(), "received": []},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_cli_keygen_and_simulate(tmp_path: Path, station_server: tuple[str, type[_Station]]) -> None:
    url, handler = station_server
    runner = CliRunner()
    keyfile = tmp_path / "k.pem"
    res = runner.invoke(main, ["station", "keygen", "--out", str(keyfile)])
    assert res.exit_code == 0, res.output
    pub = res.output.strip()
    assert public_key_b64(load_key(keyfile)) == pub
    assert runner.invoke(main, ["station", "keygen", "--out", str(keyfile)]).exit_code == 1  # no overwrite
    handler.devices.add(RegisteredDevice("SIM-7", pub))
    photos = []
    for i in range(3):
        p = tmp_path / f"p{i}.jpg"
        p.write_bytes(cv2.imencode(".jpg", np.full((48, 64, 3), 40 * i, np.uint8))[1].tobytes())
        photos.append(str(p))
    args = [
        "station",
        "simulate",
        "--url",
        url,
        "--key",
        str(keyfile),
        "--serial",
        "SIM-7",
        "--person",
        "p1",
        "--brac",
        "0.0",
        "--unit",
        "g/210L",
        "--calibrated-on",
        "2026-10-01",
        "--replay-nonce",
        "f" * 32,
        "--photos",
        *photos,
    ]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == {"accepted": True, "codes": ["signature_valid", "fresh"]}
    assert handler.received[0]["path"] == "/api/v1/breath-tests"
    assert handler.received[0]["fields"] == ["photo_0", "photo_1", "photo_2", "reading", "signature"]
    res = runner.invoke(main, args)  # same nonce again: the server says replay, the command exits 1
    assert res.exit_code == 1 and "replayed_nonce" in res.output
