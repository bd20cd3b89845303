"""The `kuzet` command line: one composition root for every command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from media_server.settings import Settings


@click.group()
def main() -> None:
    """Kuzet: remote identity-and-sobriety checks for probation supervision."""


@main.command()
@click.option("--host", default=None, help="Bind address (default: settings host).")
@click.option("--port", type=int, default=None, help="Port (default: settings port).")
def serve(host: str | None, port: int | None) -> None:
    """Run the service (embedded default: SQLite + local evidence directory)."""
    import uvicorn

    from media_server.app import create_app

    settings = Settings()
    app = create_app(settings)
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_config=None)


@main.command("check-config")
def check_config() -> None:
    """Validate the configuration and print the effective settings (secrets hidden)."""
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError lists every bad field
        click.echo(f"configuration invalid:\n{exc}", err=True)
        sys.exit(2)
    data = json.loads(settings.model_dump_json())
    data["effective_database_url"] = _hide_password(settings.database_url)
    data["evidence_store"] = f"s3://{settings.s3.endpoint}/{settings.s3.bucket}" if settings.s3.endpoint else str(
        settings.evidence_dir.resolve()
    )
    click.echo(json.dumps(data, indent=2, default=str))


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
def models() -> None:
    """Model weights: verify and install against models/manifest.json."""


@models.command("verify")
def models_verify() -> None:
    """Check every manifest entry's sha256; exit 1 when a required file is missing or altered."""
    from identity.models import ModelError, load_manifest, verified_path

    settings = Settings()
    bad = 0
    for name, entry in load_manifest().items():
        try:
            path, _ = verified_path(name, settings.models.dir)
            click.echo(f"ok       {name} {entry.version} {path}")
        except ModelError as exc:
            level = "optional" if entry.optional else "FAILED"
            bad += 0 if entry.optional else 1
            click.echo(f"{level:8} {exc}")
    sys.exit(1 if bad else 0)


@models.command("install")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
def models_install(source: Path) -> None:
    """Copy `dir:` weights from SOURCE into the models directory, verifying each sha256."""
    from identity.models import ModelError, install_from

    settings = Settings()
    try:
        names = install_from(source, settings.models.dir)
    except ModelError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"installed {len(names)} model file(s) into {settings.models.dir}: {', '.join(names) or '-'}")


@main.group("eval")
def eval_group() -> None:
    """Accuracy evaluations that print figures."""


@main.group()
def station() -> None:
    """Home station clients (AV station, breathalyzer simulator)."""


@main.group()
def db() -> None:
    """Database schema."""


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@main.group()
def evidence() -> None:
    """Evidence store and court packages."""


if __name__ == "__main__":
    main()
