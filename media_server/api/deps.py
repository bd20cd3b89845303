"""Annotated dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from media_server.auth import Principal, require
from media_server.db.enums import Role
from media_server.services import Services


def get_services(request: Request) -> Services:
    """The app's long-lived resources (`media_server.services.Services`, built by the composition root)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
OfficerDep = Annotated[Principal, Depends(require(Role.ADMIN, Role.OFFICER))]
ReviewerDep = Annotated[Principal, Depends(require(Role.REVIEWER, Role.OFFICER, Role.ADMIN))]
DeciderDep = Annotated[Principal, Depends(require(Role.REVIEWER))]
ReaderDep = Annotated[Principal, Depends(require(Role.REVIEWER, Role.OFFICER, Role.ADMIN, Role.AUDITOR))]
AuditorDep = Annotated[Principal, Depends(require(Role.AUDITOR, Role.ADMIN))]
