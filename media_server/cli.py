"""The `kuzet` command line: one composition root for every command."""

from __future__ import annotations

import json
import sys
from datetime import datetime
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
            )
        )
    except (WhipError, ValueError, OSError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if outcome is None:
        click.echo(f"no outcome within {duration_s:g} s", err=True)
        sys.exit(1)
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
def audit_verify() -> None:
    """Recompute the audit chain; exit 1 naming the first bad row when it is broken."""
    from media_server.db.audit import verify_chain
    from media_server.db.engine import make_engine, make_session_factory, read_only

    engine = make_engine(Settings().database_url)
    try:
        with make_session_factory(read_only(engine))() as session:
            report = verify_chain(session)
    finally:
        engine.dispose()
    if report.ok:
        head = f", head row {report.head.id} {report.head.row_hash}" if report.head else ""
        click.echo(f"audit log ok: {report.rows_checked} rows checked{head}")
        return
    click.echo(
        f"audit log BROKEN at row {report.first_bad_id} ({report.problem}): {report.reason}; "
        f"{report.rows_checked} rows checked",
        err=True,
    )
    sys.exit(1)


@main.group()
def evidence() -> None:
    """Evidence store and court packages."""


@evidence.command("pubkey")
def evidence_pubkey() -> None:
    """Print the evidence signing public key (base64) and its SHA-256 fingerprint (created on first use)."""
    from media_server.package import fingerprint, load_or_create_signing_key, public_key_b64

    pub = public_key_b64(load_or_create_signing_key(Settings().data_dir))
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
    from media_server.package import PackageError, load_or_create_signing_key, write_package

    settings = Settings()
    key = load_or_create_signing_key(settings.data_dir)
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
@click.option("--pubkey", default=None, help="Trusted public key (base64); else the key is not checked.")
def evidence_verify(package: Path, pubkey: str | None) -> None:
    """Verify an evidence package offline; exit 1 on any failure."""
    from media_server.package import verify_package

    with package.open("rb") as src:
        report = verify_package(src, pubkey)
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@main.group()
def retention() -> None:
    """Subject erasure once retention periods end."""


@retention.command("erase-due")
def retention_erase_due() -> None:
    """Erase every person whose retention has ended (objects still locked are reported and retried later)."""
    from datetime import UTC, datetime

    from media_server.db.engine import make_engine, make_session_factory
    from media_server.erasure import erase_due
    from media_server.evidence import build_store

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            proofs = erase_due(session, build_store(settings), datetime.now(UTC))
    finally:
        engine.dispose()
    for proof in proofs:
        click.echo(f"{proof.person_id} erasure={proof.erasure_id or '-'} proof={proof.proof_sha256}")
        click.echo(f"  counts {json.dumps(proof.counts, sort_keys=True)}")
        for kept in proof.retained:
            click.echo(f"  kept {kept.key}: {kept.reason}")
    click.echo(f"{len(proofs)} person(s) processed")


if __name__ == "__main__":
    main()
