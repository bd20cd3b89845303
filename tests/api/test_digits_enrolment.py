"""Digit enrolment through the API: real FSDD takes in, an encrypted template out, checked by the job
the check-in runs (`identity.voice.worker.spoken_digits_job`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from identity.checks import CheckResult, Outcome
from identity.voice.audio import SAMPLE_RATE_HZ
from identity.voice.digits import DIGITS, templates_from_bytes
from identity.voice.digits_data import DigitTakes, fsdd_takes, join_takes
from identity.voice.worker import spoken_digits_job
from media_server.db.enums import Modality, Role
from media_server.gallery import active_template
from tests.api.conftest import Api

FSDD = Path(__file__).parents[2] / ".." / "shared" / "data" / "voice" / "fsdd"
ENROL_TAKES = 3


@pytest.fixture(scope="module")
def takes() -> DigitTakes:
    return fsdd_takes(FSDD)["george"]


def _wav(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(pcm, dtype=np.float32), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _person(api: Api, ref: str) -> str:
    r = api.client.post(
        "/api/v1/persons", json={"external_ref": ref, "display_name": "Digits"}, headers=api.as_(Role.OFFICER)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _url(person_id: str) -> str:
    return f"/api/v1/persons/{person_id}/enrolments/digits"


def test_enrol_digit_files_then_check(api: Api, takes: DigitTakes) -> None:
    person_id = _person(api, "DG-1")
    files = [
        (f"digit_{d}", (f"{d}_{i}.wav", _wav(pcm), "audio/wav"))
        for d in DIGITS
        for i, pcm in enumerate(takes[d][:ENROL_TAKES])
    ]
    r = api.client.post(_url(person_id), files=files, headers=api.as_(Role.OFFICER))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["enrolled"] and body["enrolment_id"]
    assert body["results"][-1]["code"] == "enrolled"
    assert body["results"][-1]["details"]["takes_per_digit"] == {d: ENROL_TAKES for d in DIGITS}

    stored = active_template(api.services, person_id, Modality.DIGITS)
    assert stored is not None and templates_from_bytes(stored).counts() == {d: ENROL_TAKES for d in DIGITS}
    held_out = {d: t[ENROL_TAKES:] for d, t in takes.items() if len(t) > ENROL_TAKES}
    said = "".join(sorted(held_out))[:5]
    pcm = join_takes([held_out[d][0] for d in said], np.random.default_rng(5), max_pause_s=0.3)
    settings = api.settings.voice.digits.model_dump(mode="json")
    ok = CheckResult.from_dict(spoken_digits_job(stored, pcm, said, settings))
    assert ok.outcome is Outcome.PASS, ok.to_dict()
    wrong = said[:-1] + ("0" if said[-1] != "0" else "1")
    assert CheckResult.from_dict(spoken_digits_job(stored, pcm, wrong, settings)).outcome is Outcome.FAIL
    bad = CheckResult.from_dict(spoken_digits_job(b"garbage", pcm, said, settings))
    assert bad.outcome is Outcome.TECHNICAL and bad.code == "bad_template"


def _ten_with_pauses(takes: DigitTakes, index: int) -> np.ndarray:
    gap = np.zeros(int(0.35 * SAMPLE_RATE_HZ), np.float32)
    parts = [gap]
    for d in DIGITS:
        parts += [takes[d][index % len(takes[d])], gap]
    return np.concatenate(parts) + np.float32(1e-4) * np.random.default_rng(index).standard_normal(
        sum(len(p) for p in parts)
    ).astype(np.float32)


def test_enrol_from_utterances_of_all_ten(api: Api, takes: DigitTakes) -> None:
    person_id = _person(api, "DG-2")
    files = [("utterances", (f"u{i}.wav", _wav(_ten_with_pauses(takes, i)), "audio/wav")) for i in range(2)]
    r = api.client.post(
        _url(person_id), files=files, data={"digits": "0123456789, 0123456789"}, headers=api.as_(Role.OFFICER)
    )
    assert r.status_code == 201, r.text
    assert r.json()["enrolled"]
    assert r.json()["results"][-1]["details"]["takes_per_digit"] == {d: 2 for d in DIGITS}


def test_missing_digit_is_not_enrolled(api: Api, takes: DigitTakes) -> None:
    person_id = _person(api, "DG-3")
    files = [(f"digit_{d}", (f"{d}.wav", _wav(takes[d][0]), "audio/wav")) for d in DIGITS if d != "4"]
    r = api.client.post(_url(person_id), files=files, headers=api.as_(Role.OFFICER))
    assert r.status_code == 201, r.text
    assert not r.json()["enrolled"]
    assert r.json()["results"][-1]["code"] == "missing_digits"
    assert active_template(api.services, person_id, Modality.DIGITS) is None


def test_bad_requests_are_4xx(api: Api, takes: DigitTakes) -> None:
    person_id = _person(api, "DG-4")
    officer = api.as_(Role.OFFICER)
    wav = _wav(takes["1"][0])
    cases = [
        ({"data": {"other": "x"}}, "unknown form fields"),
        ({"files": [("digit_1", ("a.wav", b"not audio", "audio/wav"))]}, "could not be read"),
        ({"files": [("utterances", ("a.wav", wav, "audio/wav"))]}, "'digits' field"),
        ({"files": [("utterances", ("a.wav", wav, "audio/wav"))], "data": {"digits": "12,34"}}, "names 2"),
        ({"files": [("utterances", ("a.wav", wav, "audio/wav"))], "data": {"digits": "1x"}}, "not a string"),
        (
            {"files": [("utterances", ("a.wav", wav, "audio/wav"))], "data": {"digits": "123"}},
            "separate words",
        ),
        ({"data": {"digits": ""}}, "send files"),
    ]
    for kwargs, text in cases:
        r = api.client.post(_url(person_id), headers=officer, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 400, (kwargs, r.text)
        assert text in r.text, (text, r.text)
    r = api.client.post(_url(person_id), headers=officer, files={"x": ("a.wav", wav)})
    assert r.status_code == 400
    broken = {**officer, "content-type": "multipart/form-data; boundary=x"}
    assert api.client.post(_url(person_id), headers=broken, content=b"--x\r\nbroken").status_code == 400
    assert api.client.post(_url(person_id), headers=officer, json={"digit_1": "x"}).status_code == 400
    assert (
        api.client.post(_url("nobody"), headers=officer, files=[("digit_1", ("a.wav", wav))]).status_code
        == 404
    )
    r = api.client.post(_url(person_id), headers=api.as_(Role.REVIEWER), files=[("digit_1", ("a.wav", wav))])
    assert r.status_code == 403
