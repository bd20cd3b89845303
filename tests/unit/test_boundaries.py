"""Import boundaries and typed flows, checked on the source (no imports executed).

- `identity/` and `sobriety/` are pure libraries: no service, web, database or storage imports.
- Inside `media_server` the layers point one way: ports (db, evidence, keys, settings, workers, ...) never
  import the composition root, the flows or the web layer; the composition root never imports flows;
  flows never import the web layer or the app.
- Flow signatures carry no bare `Any` (the figure is printed for the CI log).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PURE_FORBIDDEN = ("media_server", "fastapi", "starlette", "sqlalchemy", "minio", "aiortc", "uvicorn")

PORTS = (
    "db",
    "evidence",
    "keys",
    "settings",
    "workers",
    "webhooks",
    "dead_letters",
    "errors",
    "tokens",
    "logs",
    "leader",
)
ROOT_MODULE = ("services",)
FLOWS = (
    "verdict",
    "artifacts",
    "jobs",
    "checkin",
    "breath",
    "schedules",
    "recovery",
    "gallery",
    "erasure",
    "package",
    "location",
    "lifecycle",
    "links",
    "retention",
)
WEB = ("api", "app", "webrtc", "calls", "auth", "cli")
# Each layer may import itself and the layers listed after it, never one before it.
LAYERS = [WEB, FLOWS, ROOT_MODULE, PORTS]
# The one value type the media layer hands to the check-in flow (a plain dataclass, no behaviour).
ALLOWED_UPWARD = {("checkin", "media_server.webrtc.capture")}
# Every flow module's signatures are counted for bare `Any` (one list, so no flow is left out).
TYPED_FLOWS = FLOWS


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _part(module: str) -> str | None:
    """`media_server.db.models` -> `db`; not a media_server module -> None."""
    parts = module.split(".")
    if parts[0] != "media_server" or len(parts) < 2:
        return None
    return parts[1]


def _layer(part: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    return None


def test_identity_and_sobriety_import_no_service_code() -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("identity", "sobriety")
        for path in _files(package)
        for name in _imports(path)
        if name.split(".")[0] in PURE_FORBIDDEN
    ]
    assert not bad, "\n".join(bad)


def test_media_server_layers_point_one_way() -> None:
    bad = []
    for path in _files("media_server"):
        rel = path.relative_to(ROOT / "media_server")
        own = rel.parts[0].removesuffix(".py")
        own_layer = _layer(own)
        if own_layer is None:
            continue
        for name in _imports(path):
            part = _part(name)
            target = _layer(part) if part else None
            if (
                target is not None
                and part != own
                and target < own_layer
                and (own, name) not in ALLOWED_UPWARD
            ):
                bad.append(f"media_server/{rel} ({own}) imports {name} ({part}, a higher layer)")
    assert not bad, "\n".join(bad)


def _bare_any(annotation: ast.expr | None) -> bool:
    return isinstance(annotation, ast.Name) and annotation.id == "Any"


def test_flow_signatures_have_no_bare_any() -> None:
    flows = [
        p
        for p in _files("media_server")
        if p.relative_to(ROOT / "media_server").parts[0].removesuffix(".py") in TYPED_FLOWS
    ]
    offenders = []
    for path in flows:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            if node.args.vararg:
                args.append(node.args.vararg)
            if node.args.kwarg:
                args.append(node.args.kwarg)
            named = [a.arg for a in args if _bare_any(a.annotation)]
            if _bare_any(node.returns):
                named.append("return")
            if named:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({', '.join(named)})")
    print(f"flow modules: {len(flows)}; bare Any in flow signatures: {len(offenders)}")
    assert not offenders, "\n".join(offenders)
