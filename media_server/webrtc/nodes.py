"""Which media node holds a WHIP session, and forwarding a request for it to that node.

One process holds a session's peer connection, so its resource URL names the node: `/whip/<node>.<token>`
(absolute under `node.public_url` when set). A load balancer can route on the prefix; a GET/DELETE/PATCH
that still reaches another node is forwarded to the owner from `node.peers`: proxied (the default: the
client's bearer stays inside the cluster, and a browser page needs no cross-origin call) or redirected
with 307. A forwarded request carries `X-Kuzet-Forwarded-By` and is never forwarded a second time.
"""

from __future__ import annotations

import secrets

import httpx
from fastapi import Request
from fastapi.responses import Response

from media_server.errors import NotFoundError, ServiceUnavailable
from media_server.settings import NodeSettings

FORWARDED_HEADER = "X-Kuzet-Forwarded-By"
NODE_HEADER = "X-Kuzet-Node"
SEPARATOR = "."  # never in a token_urlsafe token, always safe in a URL path
_PASSED_BACK = ("content-type", "allow", "etag", "cache-control", "retry-after")


def new_resource_id(node: NodeSettings) -> str:
    """A fresh, unguessable WHIP resource id, prefixed with this node's id when it has one."""
    token = secrets.token_urlsafe(16)
    return f"{node.id}{SEPARATOR}{token}" if node.id else token


def location(node: NodeSettings, resource_id: str) -> str:
    """The WHIP Location of a resource: absolute under this node's public URL, else a path."""
    path = f"/whip/{resource_id}"
    return f"{node.public_url}{path}" if node.public_url else path


def foreign_owner(node: NodeSettings, resource_id: str) -> str | None:
    """The id of the node holding `resource_id` when that is another node; None when it is ours (or the
    id names no node: a single-node id)."""
    owner, sep, _ = resource_id.partition(SEPARATOR)
    if not sep or not owner or owner == node.id:
        return None
    return owner


async def forward(
    request: Request, node: NodeSettings, owner: str, resource_id: str, body: bytes
) -> Response:
    """The owning node's answer to this request (proxy), or a 307 to it (redirect)."""
    base = node.peers.get(owner)
    if base is None or request.headers.get(FORWARDED_HEADER):
        # An unknown node, or a loop between nodes whose peers disagree: as for any unknown session.
        raise NotFoundError("no such WHIP session")
    target = f"{base.rstrip('/')}/whip/{resource_id}"
    if node.forward == "redirect":
        return Response(status_code=307, headers={"Location": target, "Cache-Control": "no-store"})
    headers = {
        name: value for name in ("authorization", "content-type") if (value := request.headers.get(name))
    }
    headers[FORWARDED_HEADER] = node.id or "-"
    try:
        async with httpx.AsyncClient(timeout=node.forward_timeout_s) as client:
            answer = await client.request(request.method, target, headers=headers, content=body)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"the media node holding this session ({owner}) does not answer") from exc
    passed = {k: v for k, v in answer.headers.items() if k.lower() in _PASSED_BACK}
    return Response(answer.content, status_code=answer.status_code, headers={**passed, NODE_HEADER: owner})
