"""The officer's live identification call and watching a check-in in progress (issue 17, item 1).

- `hub`: the calls of this node (officer publish, live probe, viewers) and ending a call with a decision;
- `publish`: the officer's recorded publish; `live`: live face results for the officer's screen.
WHEP egress itself is `media_server.webrtc.whep`; the HTTP routes are `media_server.api.calls`.
"""

from __future__ import annotations

from fastapi import FastAPI

from media_server.services import Services

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Build the WHEP egress and the call hub in the lifespan (after the WHIP ingest); end them at shutdown."""

    async def start(services: Services) -> None:
        from media_server.api.workstation import record_review
        from media_server.calls.hub import CallHub
        from media_server.webrtc.whep import WhepEgress

        egress = WhepEgress(services.settings)
        app.state.whep_egress = egress
        app.state.call_hub = CallHub(services, app.state.whip_ingest, egress, record_review)

    async def stop(services: Services) -> None:
        hub = getattr(app.state, "call_hub", None)
        if hub is not None:
            await hub.close_all()
        egress = getattr(app.state, "whep_egress", None)
        if egress is not None:
            await egress.close_all()

    app.state.startup_hooks.append(start)
    # Shutdown hooks run in order: viewers and the officer's side end before the ingest's sessions.
    app.state.shutdown_hooks.insert(0, stop)
