"""HTTP routers; `routers()` lists every one the app mounts."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """Every router of the service, in mount order."""
    from media_server.api import (
        admin,
        breath,
        calls,
        checkin_page,
        enrolment,
        lifecycle,
        location,
        reviews,
        whip,
        workstation,
        ws_admin,
    )

    return [
        admin.router,
        lifecycle.router,
        breath.router,
        enrolment.router,
        reviews.router,
        location.router,
        # workstation pages of other modules before the workstation's router: it ends in a catch-all 404
        location.pages,
        calls.pages,
        ws_admin.router,
        workstation.router,
        whip.router,
        calls.router,
        checkin_page.router,
    ]
