"""The `kuzet` command line: one composition root for every command."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from media_server.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker


@click.group()
def main() -> None:
    """Kuzet: remote identity-and-sobriety checks for probation supervision."""


@main.command()
@click.option("--host", default=None, help="Bind address (default: settings host).")
@click.option("--port", type=int, default=None, help="Port (default: settings port).")
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificate (chain): serve HTTPS (default: KUZET_SECURITY__TLS_CERTFILE).",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM private key of --certfile (default: KUZET_SECURITY__TLS_KEYFILE).",
)
def serve(host: str | None, port: int | None, certfile: Path | None, keyfile: Path | None) -> None:
    """Run the service (embedded default: SQLite + local evidence directory).

    Phones grant the camera only to a secure context: serve HTTPS here (--certfile/--keyfile) or
    behind a TLS-terminating reverse proxy (README, "Security")."""
    import uvicorn

    from media_server.app import create_app

    settings = Settings()
    certfile = certfile or settings.security.tls_certfile
    keyfile = keyfile or settings.security.tls_keyfile
    if (certfile is None) != (keyfile is None):
        click.echo("HTTPS needs both a certificate and its key (--certfile and --keyfile)", err=True)
        sys.exit(2)
    app = create_app(settings)
    tls: dict[str, str] = {}
    if certfile is not None and keyfile is not None:
        tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        **proxy_options(settings),
        **tls,  # type: ignore[arg-type]
    )


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options: the client address comes from X-Forwarded-For only when the peer is a trusted proxy
    (`security.forwarded_allow_ips`, never uvicorn's FORWARDED_ALLOW_IPS environment default)."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.security.forwarded_allow_ips}


@main.command()
@click.option(
    "--concurrency", type=int, default=None, help="Worker processes (default: KUZET_WORKERS__PROCESSES)."
)
@click.option("--hostname", default=None, help="Celery node name (default: kuzet-<pid>@<host>).")
def worker(concurrency: int | None, hostname: str | None) -> None:
    """Run a Celery analysis worker (needs KUZET_CELERY__BROKER_URL and a result backend or KUZET_REDIS__URL)."""
    from media_server.tasks import run_worker

    settings = Settings()
    if not settings.celery.broker_url:
        click.echo("KUZET_CELERY__BROKER_URL is not set: there is no queue to work on", err=True)
        sys.exit(2)
    if concurrency is not None and not 1 <= concurrency <= 64:
        click.echo("--concurrency must be 1..64", err=True)
        sys.exit(2)
    run_worker(settings, concurrency=concurrency, hostname=hostname)


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
    data["evidence_store"] = (
        f"s3://{settings.s3.endpoint}/{settings.s3.bucket}"
        if settings.s3.endpoint
        else str(settings.evidence_dir.resolve())
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


@main.group()
def users() -> None:
    """Accounts (the first admin is created here; the rest through the API)."""


@users.command("create")
@click.option("--username", required=True)
@click.option(
    "--role",
    type=click.Choice(["admin", "officer", "reviewer", "auditor", "device", "person"]),
    required=True,
)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Read from a prompt when omitted.",
)
def users_create(username: str, role: str, password: str) -> None:
    """Create an account directly in the database (audited as actor `cli`)."""
    from sqlalchemy.exc import IntegrityError

    from media_server.db import audit
    from media_server.db.engine import make_engine, make_session_factory
    from media_server.db.enums import Role
    from media_server.db.migrate import upgrade
    from media_server.db.models import User
    from media_server.tokens import hash_password

    if len(password) < 10:
        click.echo("password must be at least 10 characters", err=True)
        sys.exit(2)
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    try:
        with factory.begin() as session:
            user = User(username=username, password_hash=hash_password(password), role=Role(role))
            session.add(user)
            session.flush()
            audit.append(
                session,
                actor="cli",
                action="user_created",
                subject_type="user",
                subject_id=user.id,
                details={"role": role},
            )
            click.echo(f"created {role} {username} ({user.id})")
    except IntegrityError:
        click.echo(f"username {username!r} is taken", err=True)
        sys.exit(1)


@main.group("eval")
def eval_group() -> None:
    """Accuracy evaluations that print figures."""


@eval_group.command("pad")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_pad(root: Path, as_json: bool) -> None:
    """Passive anti-spoofing on labelled live/attack images or videos: APCER per attack type, BPCER."""
    from identity.models import ModelError
    from identity.pad.evaluate import evaluate_dir, format_report

    settings = Settings()
    try:
        report = evaluate_dir(root, settings.models.dir, settings.pad)
    except ModelError as exc:
        click.echo(f"{exc}\nrun `kuzet models install --source ../shared/models` first", err=True)
        sys.exit(1)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


@eval_group.command("face")
@click.option(
    "--pairs",
    "pairs_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with columns img1,img2,same (paths relative to --root); needed unless --cross-validate.",
)
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON (with per-pair scores and ROC)."
)
@click.option("--baseline", is_flag=True, help="Also run plain face_recognition on the same pairs.")
@click.option("--all-pairs", is_flag=True, help="Also score every image pair (identity = parent directory).")
@click.option(
    "--limit", type=int, default=None, help="Use only the first N pairs (half genuine, half impostor)."
)
@click.option(
    "--cross-validate",
    is_flag=True,
    help="Calibrate on every image under --root (all pairs) with identity-grouped k-fold CV and print the "
    "out-of-sample false-FAIL / false-PASS / REVIEW rates, with and without flip TTA.",
)
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True, help="CV folds.")
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True, help="CV repeats.")
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("var/face_embeddings.npz"),
    show_default=True,
    help="Embedding cache for --cross-validate (re-runs skip encoding); invalidated when images, "
    "weights or detection settings change.",
)
@click.option(
    "--write-calibration",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --cross-validate: write the calibration (tables on all images + CV margins) to this file.",
)
def eval_face(
    pairs_csv: Path | None,
    root: Path,
    as_json: bool,
    baseline: bool,
    all_pairs: bool,
    limit: int | None,
    cross_validate: bool,
    folds: int,
    repeats: int,
    cache: Path,
    write_calibration: Path | None,
) -> None:
    """Face verification: pairs CSV metrics, calibration provenance and overlap, or cross-validated calibration."""
    from identity.face.evaluate import calibrate, evaluate, format_calibration, format_report
    from identity.models import ModelError

    settings = Settings()
    if write_calibration is not None and not cross_validate:
        raise click.UsageError("--write-calibration needs --cross-validate")
    if pairs_csv is None and not cross_validate:
        raise click.UsageError("give --pairs, or --cross-validate to calibrate on every image under --root")
    try:
        if cross_validate:
            cv_report = calibrate(
                root,
                settings.face,
                settings.models.dir,
                folds=folds,
                repeats=repeats,
                cache=cache,
                write_calibration=write_calibration,
            )
            click.echo(json.dumps(cv_report, indent=2) if as_json else format_calibration(cv_report))
        if pairs_csv is not None:
            report = evaluate(
                pairs_csv,
                root,
                settings.face,
                settings.models.dir,
                baseline=baseline,
                all_pairs=all_pairs,
                limit=limit,
            )
            click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    except ModelError as exc:
        click.echo(
            f"{exc}\nrun `kuzet models verify` (face weights ship in face_recognition_models)", err=True
        )
        sys.exit(1)


@eval_group.command("voice")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV with columns path,speaker (paths relative to --root).",
)
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option(
    "--speaker-prefix", default=None, help="Evaluate only speakers whose id starts with this (e.g. sc_)."
)
@click.option("--no-baseline", is_flag=True, help="Skip plain resemblyzer cosine scoring.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_voice(
    manifest: Path, root: Path, speaker_prefix: str | None, no_baseline: bool, as_json: bool
) -> None:
    """Speaker verification on all same/different-speaker trials: EER, FNMR at FMR 1%/0.1%, ms per 3 s."""
    from identity.models import ModelError
    from identity.voice.evaluate import evaluate, format_report

    settings = Settings()
    try:
        report = evaluate(
            manifest,
            root,
            settings.models.dir,
            settings.voice,
            speaker_prefix=speaker_prefix,
            with_baseline=not no_baseline,
        )
    except (ModelError, ValueError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))


@main.group()
def station() -> None:
    """Home station clients (AV station, breathalyzer simulator)."""


@station.command("run")
@click.option("--url", required=True, help="WHIP endpoint (https://host/whip) or the service base URL.")
@click.option(
    "--device-key", required=True, envvar="KUZET_STATION_DEVICE_KEY", help="The AV station's device key."
)
@click.option("--video", default=None, help="Video file, or a device with --video-format (e.g. /dev/video0).")
@click.option("--audio", default=None, help="Audio file, or a device with --audio-format (e.g. default).")
@click.option("--video-format", default=None, help="FFmpeg input format of a video device (v4l2).")
@click.option("--audio-format", default=None, help="FFmpeg input format of an audio device (pulse, alsa).")
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=180.0,
    show_default=True,
    help="Give up waiting for the outcome after this many seconds.",
)
@click.option("--lat", type=float, default=None, help="Station latitude (WGS84 degrees).")
@click.option("--lon", type=float, default=None, help="Station longitude (WGS84 degrees).")
@click.option("--accuracy-m", type=float, default=50.0, show_default=True, help="Location accuracy, metres.")
@click.option(
    "--ice-server",
    "ice_servers",
    multiple=True,
    help="STUN/TURN URL (repeat); default: the KUZET_MEDIA__ICE_SERVERS setting.",
)
@click.option(
    "--busy-give-up-s",
    type=float,
    default=15 * 60.0,
    show_default=True,
    help="While the server answers 503 busy, wait its Retry-After and offer again for this long.",
)
def station_run(
    url: str,
    device_key: str,
    video: str | None,
    audio: str | None,
    video_format: str | None,
    audio_format: str | None,
    duration_s: float,
    lat: float | None,
    lon: float | None,
    accuracy_m: float,
    ice_servers: tuple[str, ...],
    busy_give_up_s: float,
) -> None:
    """Run one AV-station check-in over WHIP, log the prompts, print the outcome as JSON."""
    import asyncio
    import logging

    from media_server.station_client import StationLocation, WhipError, run_station

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    location = StationLocation(lat, lon, accuracy_m) if lat is not None and lon is not None else None
    try:
        outcome = asyncio.run(
            run_station(
                url,
                device_key,
                video=video,
                audio=audio,
                video_format=video_format,
                audio_format=audio_format,
                duration_s=duration_s,
                location=location,
                ice_servers=list(ice_servers) or settings.media.ice_servers,
                loopback_only=settings.media.loopback_only,
                busy_give_up_s=busy_give_up_s,
            )
        )
    except (WhipError, ValueError, OSError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if outcome is None:
        click.echo(f"no outcome within {duration_s:g} s", err=True)
        sys.exit(1)
    if outcome.get("ended_reason") not in (None, "completed"):
        retake = (
            " - a technical failure, not a violation: take the check again" if outcome.get("retake") else ""
        )
        click.echo(f"the server ended the session early ({outcome['ended_reason']}){retake}", err=True)
    click.echo(json.dumps(outcome, indent=2, ensure_ascii=False))


@station.command("keygen")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the Ed25519 private key (PKCS#8 PEM, mode 0600).",
)
def station_keygen(out: Path) -> None:
    """Create a breath station key; prints the public key (base64 of raw 32 bytes) to register."""
    from sobriety.simulator import generate_key, public_key_b64, save_key

    if out.exists():
        click.echo(f"{out} exists; refusing to overwrite a station key", err=True)
        sys.exit(1)
    key = generate_key()
    save_key(key, out)
    click.echo(public_key_b64(key))


@station.command("simulate")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="Service base URL.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The station's Ed25519 private key (from `kuzet station keygen`).",
)
@click.option("--serial", required=True, help="Registered device serial.")
@click.option("--person", required=True, help="Person id the reading is for.")
@click.option("--brac", type=float, required=True, help="Breath alcohol value, in --unit.")
@click.option("--unit", type=click.Choice(["g/210L", "mg/L"]), default="g/210L", show_default=True)
@click.option(
    "--photos",
    "photos",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JPEG photos taken during the blow (repeat, or list after one --photos).",
)
@click.option(
    "--calibrated-on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Sensor calibration date (default: 30 days ago).",
)
@click.option("--replay-nonce", default=None, help="Send this nonce instead of a fresh one (replay demo).")
@click.option(
    "--timeout", "timeout_s", type=float, default=60.0, show_default=True, help="HTTP timeout, seconds."
)
@click.argument("more_photos", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def station_simulate(
    url: str,
    key_file: Path,
    serial: str,
    person: str,
    brac: float,
    unit: str,
    photos: tuple[Path, ...],
    calibrated_on: datetime | None,
    replay_nonce: str | None,
    timeout_s: float,
    more_photos: tuple[Path, ...],
) -> None:
    """Send one signed breath test to POST /api/v1/breath-tests and print the JSON response."""
    import httpx

    from sobriety.simulator import load_key, multipart_parts, sign_reading, simulated_reading

    files_in = [*photos, *more_photos]
    reading = simulated_reading(
        serial=serial,
        person_id=person,
        brac=brac,
        unit=unit,
        n_photos=len(files_in),
        calibrated_on=calibrated_on.date() if calibrated_on else None,
        nonce=replay_nonce,
    )
    body, signature = sign_reading(reading, load_key(key_file))
    data, files = multipart_parts(body, signature, [p.read_bytes() for p in files_in])
    try:
        resp = httpx.post(url.rstrip("/") + "/api/v1/breath-tests", data=data, files=files, timeout=timeout_s)
    except httpx.HTTPError as exc:
        click.echo(f"request failed: {exc}", err=True)
        sys.exit(2)
    try:
        click.echo(json.dumps(resp.json(), indent=2))
    except ValueError:
        click.echo(resp.text)
    sys.exit(0 if resp.is_success else 1)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Migrate the configured database (KUZET_DATABASE__URL, default SQLite under data_dir)."""
    from media_server.db.migrate import current, upgrade

    url = Settings().database_url
    upgrade(url, revision)
    click.echo(f"{_hide_password(url)} is at revision {current(url)}")


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A signed checkpoint (`kuzet audit checkpoint`): also fail when rows up to it were removed.",
)
@click.option(
    "--pubkey",
    default=None,
    help="Key the checkpoint must be signed with (base64); default: this service's evidence key.",
)
def audit_verify(checkpoint_path: Path | None, pubkey: str | None) -> None:
    """Recompute the audit chain; exit 1 naming the first bad row when it is broken."""
    from media_server.db.audit import CheckpointError, read_checkpoint, verify_chain
    from media_server.db.engine import make_engine, make_session_factory, read_only

    settings = Settings()
    anchor = None
    if checkpoint_path is not None:
        try:
            doc = json.loads(checkpoint_path.read_text(encoding="utf-8"))
            anchor = read_checkpoint(doc, pubkey or _service_public_key(settings))
        except (ValueError, CheckpointError, OSError) as exc:
            click.echo(f"checkpoint {checkpoint_path} rejected: {exc}", err=True)
            sys.exit(1)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(read_only(engine))() as session:
            report = verify_chain(
                session,
                expected_head=anchor.head if anchor else None,
                expected_count=anchor.count if anchor else None,
            )
    finally:
        engine.dispose()
    if report.ok:
        head = f", head row {report.head.id} {report.head.row_hash}" if report.head else ""
        against = f"; contains checkpoint row {anchor.head.id} of {anchor.created_at}" if anchor else ""
        click.echo(f"audit log ok: {report.rows_checked} rows checked{head}{against}")
        return
    click.echo(
        f"audit log BROKEN at row {report.first_bad_id} ({report.problem}): {report.reason}; "
        f"{report.rows_checked} rows checked",
        err=True,
    )
    sys.exit(1)


def _service_public_key(settings: Settings) -> str:
    from media_server.keys import SIGNING_KEY_FILE, load_signing_key, signing_key_configured
    from media_server.package import public_key_b64

    if not signing_key_configured(settings) and not (settings.data_dir / SIGNING_KEY_FILE).exists():
        raise CheckpointKeyMissing(f"no signing key in {settings.data_dir}; pass --pubkey")
    return public_key_b64(load_signing_key(settings))


class CheckpointKeyMissing(ValueError):
    """The service key that signs checkpoints is not on this machine."""


@audit.command("checkpoint")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the checkpoint here (default: stdout). Publish it where the database's admins cannot edit it.",
)
def audit_checkpoint(out_path: Path | None) -> None:
    """Sign the audit log's current head and row count with the service key (JSON)."""
    from media_server.db.audit import CheckpointError, make_checkpoint
    from media_server.db.engine import make_engine, make_session_factory, read_only
    from media_server.keys import load_signing_key

    settings = Settings()
    key = load_signing_key(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(read_only(engine))() as session:
            doc = make_checkpoint(session, key)
    except CheckpointError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out_path}: head row {doc['head_id']}, {doc['count']} rows")


@main.group()
def positions() -> None:
    """Position reports (location monitoring)."""


@positions.command("verify")
@click.option("--person", "person_id", required=True, help="The person's id.")
def positions_verify(person_id: str) -> None:
    """Recompute a person's position chain and re-verify its signed batches; exit 1 at the first bad row."""
    from media_server.db.engine import make_engine, make_session_factory, read_only
    from media_server.location.chain import verify_person

    engine = make_engine(Settings().database_url)
    try:
        with make_session_factory(read_only(engine))() as session:
            report = verify_person(session, person_id)
    finally:
        engine.dispose()
    if report.ok:
        head = f", head seq {report.head_seq} {report.head_hash}" if report.head_seq else ""
        click.echo(f"positions of {person_id} ok: {report.rows_checked} rows checked{head}")
        return
    click.echo(
        f"positions of {person_id} BROKEN at seq {report.first_bad_seq}: {report.reason}; "
        f"{report.rows_checked} rows checked",
        err=True,
    )
    sys.exit(1)


@main.group()
def evidence() -> None:
    """Evidence store and court packages."""


@evidence.command("pubkey")
def evidence_pubkey() -> None:
    """Print the evidence signing public key (base64) and its SHA-256 fingerprint.

    The key is KUZET_EVIDENCE__SIGNING_KEY (file:, env: or command:, the same on every node) or
    KUZET_EVIDENCE__SIGNING_KEY_FILE, else the data_dir key (created on first use)."""
    from media_server.keys import load_signing_key
    from media_server.package import fingerprint, public_key_b64

    try:
        pub = public_key_b64(load_signing_key(Settings()))
    except ValueError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(f"public key   {pub}")
    click.echo(f"fingerprint  {fingerprint(pub)}")


@evidence.command("keygen")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def evidence_keygen(out_path: Path) -> None:
    """Create an Ed25519 evidence signing key file for KUZET_EVIDENCE__SIGNING_KEY_FILE (never overwrites)."""
    from media_server.keys import write_signing_key
    from media_server.package import fingerprint, public_key_b64

    try:
        key = write_signing_key(out_path)
    except FileExistsError:
        click.echo(f"{out_path} exists; refusing to replace a signing key", err=True)
        sys.exit(1)
    pub = public_key_b64(key)
    click.echo(f"wrote {out_path} (mode 0600)")
    click.echo(f"public key   {pub}")
    click.echo(f"fingerprint  {fingerprint(pub)}")


@evidence.command("export")
@click.argument("session_id")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--exporter", default="cli", show_default=True, help="Who exports (manifest and audit log).")
def evidence_export(session_id: str, out_path: Path, exporter: str) -> None:
    """Write the signed evidence package (ZIP) of SESSION_ID to --out."""
    from media_server.db.engine import make_engine, make_session_factory
    from media_server.evidence import build_store
    from media_server.keys import load_signing_key
    from media_server.package import PackageError, write_package

    settings = Settings()
    key = load_signing_key(settings)
    engine = make_engine(settings.database_url)
    tmp = out_path.with_name(out_path.name + ".part")
    try:
        with make_session_factory(engine)() as session, tmp.open("wb") as out:
            manifest = write_package(session, build_store(settings), session_id, key, out, exporter=exporter)
        tmp.replace(out_path)
    except PackageError as exc:
        tmp.unlink(missing_ok=True)
        click.echo(str(exc), err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    click.echo(
        f"wrote {out_path}: {len(manifest['files'])} files, {len(manifest['artifacts'])} artifacts, "
        f"{len(manifest['unavailable'])} unavailable, signed by {manifest['signing_key_sha256']}"
    )


@evidence.command("verify")
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pubkey", default=None, help="The service's published public key (base64).")
@click.option(
    "--fingerprint",
    default=None,
    envvar="KUZET_EVIDENCE_FINGERPRINT",
    help="The pinned SHA-256 fingerprint of the service's key (`kuzet evidence pubkey`); "
    "env KUZET_EVIDENCE_FINGERPRINT.",
)
def evidence_verify(package: Path, pubkey: str | None, fingerprint: str | None) -> None:
    """Verify an evidence package offline; exit 1 on any failure, also when no trusted key is given."""
    from media_server.package import verify_package

    with package.open("rb") as src:
        report = verify_package(src, pubkey, trusted_fingerprint=fingerprint)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@main.group()
def retention() -> None:
    """Subject erasure once retention periods end."""


@retention.command("erase-due")
def retention_erase_due() -> None:
    """Erase every person whose retention has ended (objects still locked are reported and retried later)."""
    from datetime import UTC, datetime, timedelta

    from media_server.db.engine import make_engine, make_session_factory
    from media_server.erasure import erase_due
    from media_server.evidence import build_store

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            proofs = erase_due(
                session,
                build_store(settings),
                datetime.now(UTC),
                unattributed_after=timedelta(days=settings.retention.unattributed_days),
            )
    finally:
        engine.dispose()
    for proof in proofs:
        click.echo(f"{proof.person_id} erasure={proof.erasure_id or '-'} proof={proof.proof_sha256}")
        click.echo(f"  counts {json.dumps(proof.counts, sort_keys=True)}")
        for kept in proof.retained:
            click.echo(f"  kept {kept.key}: {kept.reason}")
    click.echo(f"{len(proofs)} person(s) processed")


def _database(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    """The configured database, migrated to head, and a session factory on it."""
    from media_server.db.engine import make_engine, make_session_factory
    from media_server.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    return engine, make_session_factory(engine)


@retention.command("report")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def retention_report_cmd(as_json: bool) -> None:
    """What is held per person (templates, sessions, evidence objects and bytes, location track) and why."""
    from datetime import UTC, datetime

    from media_server.retention import retention_report

    settings = Settings()
    engine, factory = _database(settings)
    try:
        with factory() as session:
            report = retention_report(session, settings.retention, datetime.now(UTC))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    for p in report["persons"]:
        held = p["held"]
        click.echo(
            f"{p['person_id']} {p['external_ref']} {p['status']}: {held['templates']} template(s), "
            f"{held['sessions']} session(s), {held['objects']} object(s) / {held['object_bytes']} bytes, "
            f"{held['rejection_objects']} rejected-submission object(s); location: "
            f"{held['positions']} position(s), {held['signed_batches']} signed batch(es), "
            f"{held['device_events']} device event(s), {held['location_alerts']} alert(s), "
            f"{held['location_zones']} zone(s)"
        )
        click.echo(f"  why: {p['why']}")
    loose = report["unattributed"]
    click.echo(
        f"unattributed: {loose['rejections']} rejection(s), {loose['objects']} object(s) / "
        f"{loose['object_bytes']} bytes; first due {loose['first_due_for_erasure'] or '-'}"
    )


@retention.command("verify-erasure")
@click.argument("erasure_id")
def retention_verify_erasure(erasure_id: str) -> None:
    """Recompute an erasure's proof from the rows it marked; exit 1 on any mismatch."""
    from media_server.erasure import verify_erasure
    from media_server.evidence import build_store

    settings = Settings()
    engine, factory = _database(settings)
    try:
        with factory() as session:
            check = verify_erasure(session, build_store(settings), erasure_id)
    except LookupError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    click.echo(f"erasure {check.erasure_id} of {check.person_id}: proof {check.proof_sha256}")
    click.echo(f"  recomputed {check.recomputed_sha256} over {check.deleted_keys} deleted object(s)")
    for problem in check.problems:
        click.echo(f"  PROBLEM {problem}")
    click.echo("ok" if check.ok else "NOT OK")
    sys.exit(0 if check.ok else 1)


@main.group()
def persons() -> None:
    """A supervised person's life cycle: end of supervision, erasure on request (audited as `cli`)."""


@persons.command("end-supervision")
@click.option("--person", "person_id", required=True, help="Person id.")
@click.option("--ended-on", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="YYYY-MM-DD")
@click.option("--reason", default="order ended", show_default=True)
def persons_end_supervision(person_id: str, ended_on: datetime, reason: str) -> None:
    """Record the order's end date: devices, schedules and open links are revoked at once."""
    from media_server.errors import KuzetError
    from media_server.lifecycle import end_supervision

    settings = Settings()
    engine, factory = _database(settings)
    try:
        with factory() as session:
            out = end_supervision(
                session,
                person_id,
                ended_on.date(),
                actor="cli",
                reason=reason,
                settings=settings.retention,
            )
    except KuzetError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    click.echo(json.dumps(out, sort_keys=True))


@persons.command("erase")
@click.option("--person", "person_id", required=True, help="Person id.")
@click.option("--reason", required=True, help="Why (recorded in the audit log and the proof's audit entry).")
def persons_erase(person_id: str, reason: str) -> None:
    """Erase a person on request now (evidence under object lock stays until it is free); prints the proof."""
    from datetime import UTC

    from media_server.erasure import erase_person
    from media_server.evidence import build_store

    settings = Settings()
    engine, factory = _database(settings)
    try:
        with factory() as session:
            proof = erase_person(
                session,
                build_store(settings),
                person_id,
                datetime.now(UTC),
                actor="cli",
                reason=reason,
                on_request=True,
            )
    except (LookupError, ValueError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    click.echo(f"{proof.person_id} erasure={proof.erasure_id or '-'} proof={proof.proof_sha256}")
    click.echo(f"  counts {json.dumps(proof.counts, sort_keys=True)}")
    for kept in proof.retained:
        click.echo(f"  kept {kept.key}: {kept.reason}")


if __name__ == "__main__":
    main()
