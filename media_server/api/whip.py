"""WHIP (RFC 9725): POST an SDP offer, get the answer and a session resource; DELETE ends it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from media_server.errors import TooLarge
from media_server.settings import NodeSettings
from media_server.webrtc import nodes
from media_server.webrtc.ingest import SDP_MEDIA_TYPE, WhipIngest

router = APIRouter(tags=["whip"])


def get_ingest(request: Request) -> WhipIngest | None:
    """The app's WHIP ingest (set up by `media_server.webrtc.ingest.install` or a test)."""
    return getattr(request.app.state, "whip_ingest", None)


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The request body, read as it streams in; TooLarge (413) as soon as it passes `max_bytes`
    (a chunked upload has no Content-Length to refuse up front)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise TooLarge(f"the SDP offer is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"the SDP offer is larger than {max_bytes} bytes")
    return bytes(body)


def _node(request: Request) -> NodeSettings:
    node: NodeSettings = request.app.state.settings.node
    return node


async def _elsewhere(request: Request, resource_id: str) -> Response | None:
    """The owning node's answer when `resource_id` lives on another node (None: it is ours)."""
    node = _node(request)
    owner = nodes.foreign_owner(node, resource_id)
    if owner is None:
        return None
    body = await read_capped(request, request.app.state.settings.media.max_offer_bytes)
    return await nodes.forward(request, node, owner, resource_id, body)


def _unavailable() -> JSONResponse:
    return JSONResponse({"error": "unavailable", "message": "media ingest is not running"}, status_code=503)


@router.post("/whip", status_code=201, response_class=Response)
async def whip_post(
    request: Request,
    content_type: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Open a session: body is the SDP offer (non-trickle, all candidates included)."""
    ingest = get_ingest(request)
    if ingest is None:
        return _unavailable()
    # Authorise before reading: a bogus caller's body is never read, a valid one's is capped.
    await ingest.preflight(content_type, authorization)
    body = await read_capped(request, ingest.settings.media.max_offer_bytes)
    resource_id, answer = await ingest.open(content_type, authorization, body)
    location = nodes.location(_node(request), resource_id)
    return Response(
        content=answer,
        status_code=201,
        media_type=SDP_MEDIA_TYPE,
        headers={"Location": location, "ETag": f'"{resource_id}"', "Cache-Control": "no-store"},
    )


@router.delete("/whip/{resource_id}")
async def whip_delete(
    resource_id: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """End the session (with the bearer that opened it); its capture is still processed. A session of
    another node is forwarded there (`media_server.webrtc.nodes`)."""
    if (answer := await _elsewhere(request, resource_id)) is not None:
        return answer
    ingest = get_ingest(request)
    if ingest is None:
        return _unavailable()
    ingest.delete(resource_id, authorization)
    return Response(status_code=200)


@router.get("/whip/{resource_id}")
async def whip_state(
    resource_id: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """The session's state and, once it ended, its outcome (same bearer as the POST). A station
    whose peer connection died polls this to learn that the server ended the session."""
    if (answer := await _elsewhere(request, resource_id)) is not None:
        return answer
    ingest = get_ingest(request)
    if ingest is None:
        return _unavailable()
    return JSONResponse(ingest.state(resource_id, authorization), headers={"Cache-Control": "no-store"})


@router.patch("/whip/{resource_id}")
async def whip_patch(resource_id: str, request: Request) -> Response:
    """Trickle ICE and ICE restarts are not supported: offers carry every candidate."""
    if (answer := await _elsewhere(request, resource_id)) is not None:
        return answer
    return Response(status_code=405, headers={"Allow": "GET, DELETE"})


@router.options("/whip")
async def whip_options() -> Response:
    """What the endpoint accepts (RFC 9725 allows OPTIONS for discovery)."""
    return Response(status_code=204, headers={"Allow": "POST, OPTIONS", "Accept-Post": SDP_MEDIA_TYPE})
