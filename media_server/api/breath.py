"""The breath-station API: `POST /api/v1/breath-tests` (multipart, signed reading + photos).

Wire format (see `sobriety.simulator`): `reading` = the canonical JSON text the station signed,
`signature` = base64 Ed25519 signature over exactly its UTF-8 bytes, files `photo_0` .. `photo_n` in the
order of the reading's `photo_times`. The station authenticates by its signature (the device key is
registered by an admin), so the endpoint takes no login.

Bounds, answered before anything is stored (the upload was not fully received or is not a breath test):
413 for a body or a file over `sobriety.reading_max_bytes` / `photo_max_bytes`, 400 for a malformed
body, more than `photo_max_count` photos, missing or repeated fields. Everything else is stored first and
then judged (media_server.breath); rejections answer {error, message, ...} with:

* 400 not_canonical, invalid_reading, weak_nonce - the station sent a malformed reading;
* 401 unknown_device, device_revoked, bad_signature - the signature cannot be trusted;
* 409 replayed_nonce - the nonce was used before;
* 422 stale_reading, future_timestamp and every `validate_reading` failure (calibration, blow timing,
  photo timing or count, implausible value), device_unassigned, person_mismatch.

An admitted reading answers 201 with the session id, the verdict (PASS / FAIL / REVIEW), its reasons,
every check and the retest instruction (e.g. a confirmatory test after the deprivation period).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from media_server.api.deps import ServicesDep
from media_server.breath import BreathOutcome, Upload, now_utc, submit_breath_test
from media_server.errors import BadInput, TooLarge
from media_server.services import Services
from sobriety.simulator import PHOTO_FIELD_PREFIX, READING_FIELD, SIGNATURE_FIELD

router = APIRouter(prefix="/api/v1", tags=["breath"])

ClockDep = Annotated[datetime, Depends(now_utc)]

SIGNATURE_MAX_CHARS = 256  # base64 of a 64-byte signature is 88 characters
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries and part headers
_PHOTO_FIELD = re.compile(rf"^{PHOTO_FIELD_PREFIX}(\d{{1,2}})$")

# Rejection code -> HTTP status (anything not listed is a 422: a valid-looking but unusable reading).
STATUS_FOR_CODE: dict[str, int] = {
    "not_canonical": 400,
    "invalid_reading": 400,
    "weak_nonce": 400,
    "unknown_device": 401,
    "device_revoked": 401,
    "bad_signature": 401,
    "replayed_nonce": 409,
}
DEFAULT_REJECTION_STATUS = 422


def _limits(services: Services) -> tuple[int, int, int]:
    s = services.settings.sobriety
    body = s.reading_max_bytes + SIGNATURE_MAX_CHARS + s.photo_max_count * s.photo_max_bytes
    return s.reading_max_bytes, s.photo_max_bytes, body + MULTIPART_OVERHEAD_BYTES


async def _read_upload(request: Request, services: Services) -> Upload:
    """Parse and bound the multipart body; raises BadInput (400) or TooLarge (413)."""
    reading_max, photo_max, body_max = _limits(services)
    max_photos = services.settings.sobriety.photo_max_count
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > body_max:
        raise TooLarge(f"a breath test is at most {body_max} bytes")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadInput("send multipart/form-data with `reading`, `signature` and photo_0..photo_n")
    try:
        form = await request.form(max_files=max_photos + 2, max_fields=4, max_part_size=reading_max)
    except StarletteHTTPException as exc:
        raise BadInput(f"malformed or oversized multipart body: {exc.detail}") from exc
    try:
        reading: bytes | None = None
        signature: str | None = None
        photos: dict[int, tuple[str, UploadFile]] = {}
        for name, value in form.multi_items():
            if name == READING_FIELD:
                if reading is not None:
                    raise BadInput("`reading` was sent twice")
                if isinstance(value, UploadFile):
                    reading = await value.read(reading_max + 1)
                else:
                    reading = value.encode("utf-8")
                if len(reading) > reading_max:
                    raise TooLarge(f"the reading is larger than {reading_max} bytes")
            elif name == SIGNATURE_FIELD:
                if signature is not None or isinstance(value, UploadFile):
                    raise BadInput("`signature` must be one text field")
                if len(value) > SIGNATURE_MAX_CHARS:
                    raise BadInput("the signature is too long for an Ed25519 signature")
                signature = value
            elif (m := _PHOTO_FIELD.match(name)) is not None and isinstance(value, UploadFile):
                index = int(m.group(1))
                if index in photos:
                    raise BadInput(f"{name} was sent twice")
                photos[index] = (name, value)
            else:
                raise BadInput(f"unexpected field {name!r}")
        if reading is None:
            raise BadInput("the `reading` field is missing")
        if signature is None:
            raise BadInput("the `signature` field is missing")
        if len(photos) > max_photos:
            raise BadInput(f"at most {max_photos} photos per breath test")
        if sorted(photos) != list(range(len(photos))):
            raise BadInput("photos must be named photo_0 .. photo_n without gaps")
        files: list[tuple[str, bytes, str]] = []
        for index in range(len(photos)):
            name, upload = photos[index]
            data = await upload.read(photo_max + 1)
            if len(data) > photo_max:
                raise TooLarge(f"{name} is larger than {photo_max} bytes")
            files.append((name, data, upload.content_type or ""))
        return Upload(reading=reading, signature=signature, photos=files)
    finally:
        await form.close()


def _response(outcome: BreathOutcome) -> JSONResponse:
    body = outcome.to_dict()
    if outcome.rejection is None:
        return JSONResponse(body, status_code=201)
    code = outcome.rejection.code
    status = STATUS_FOR_CODE.get(code, DEFAULT_REJECTION_STATUS)
    return JSONResponse({"error": code, "message": outcome.rejection.message, **body}, status_code=status)


@router.post(
    "/breath-tests",
    status_code=201,
    responses={
        400: {"description": "Malformed upload or reading"},
        401: {"description": "Unknown or revoked device, or a signature that does not verify"},
        409: {"description": "Replayed nonce"},
        413: {"description": "Upload too large"},
        422: {"description": "Stale reading, expired calibration, invalid blow or photo timing"},
    },
)
async def post_breath_test(request: Request, services: ServicesDep, now: ClockDep) -> JSONResponse:
    """Submit one signed breath test with its photos; evidence is stored before anything is judged."""
    upload = await _read_upload(request, services)
    outcome = await submit_breath_test(services, upload, now)
    return _response(outcome)
