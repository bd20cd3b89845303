"""HTTP routers; `routers()` lists every one the app mounts."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """Every router of the service, in mount order."""
    from media_server.api import (
        admin,
        breath,
        checkin_page,
        enrolment,
        lifecycle,
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
        ws_admin.router,  # before the workstation's catch-all /ws/{path} page
        workstation.router,
        whip.router,
        checkin_page.router,
    ]
