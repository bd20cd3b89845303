"""Court evidence packages: one ZIP per session, signed with the service's Ed25519 key, verifiable offline.

Members:
- `artifacts/<artifact id><ext>`: every stored artifact of the session, read back verified;
- `session.json`, `checks.json`, `verdict.json`, `reviews.json`: the database records;
- `audit.json`: the contiguous audit-log segment from the session's first entry to the export entry.
  Entries about this session, its verdicts/reviews/artifacts or its person are complete (their hash
  can be recomputed); every other entry in the span keeps only `id`, `prev_hash` and `row_hash`, so
  the chain links can be checked without disclosing other people's records;
- `manifest.json`: every member's sha256 and size, artifact keys, models, thresholds, the export time,
  the exporter, and the audit head at export;
- `manifest.sig`: the Ed25519 signature of the manifest bytes; `signing_key.pub`: the raw public key
  (base64); `README.txt`: how to check all of it.

`verify_package` checks every hash, missing/extra members, the signature against a trusted key (given
whole or as its pinned fingerprint; without one verification fails), the audit segment, and that
verdict.json and reviews.json agree with the audit rows. A key inside a package proves nothing by
itself: its fingerprint must be the one `kuzet evidence pubkey` prints on the service.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mimetypes
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from media_server.db import audit
from media_server.db.models import (
    GENESIS_HASH,
    Artifact,
    AuditEntry,
    CheckResultRecord,
    CheckSession,
    Review,
    Verdict,
)
from media_server.evidence.port import EvidenceError, EvidenceStore
from media_server.keys import EvidenceSigner
from media_server.verdict import POLICY_VERSION

PACKAGE_FORMAT = "kuzet-evidence-package/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing_key.pub"
README = "README.txt"
AUDIT = "audit.json"
# Members outside the manifest's file list: the manifest itself and its signature.
_UNLISTED = frozenset({MANIFEST, SIGNATURE})
_REQUIRED = frozenset({MANIFEST, SIGNATURE, PUBLIC_KEY, AUDIT, "verdict.json", "checks.json", "session.json"})
_CHUNK_BYTES = 1024 * 1024


class PackageError(Exception):
    """The package cannot be built (no such session)."""


# -- the signing key ------------------------------------------------------------------------------


def public_key_b64(key: EvidenceSigner | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64."""
    pub = key if isinstance(key, Ed25519PublicKey) else key.public_key()
    return base64.b64encode(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def fingerprint(public_b64: str) -> str:
    """SHA-256 (hex) of the raw public key: short enough to read out over the phone."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()


def public_key_pem(public_b64: str) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), for openssl."""
    pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# -- export ---------------------------------------------------------------------------------------


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 in UTC, or None."""
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def verdict_view(v: Verdict) -> dict[str, Any]:
    """A verdict as JSON (API and evidence package share it)."""
    return {
        "id": v.id,
        "decision": v.decision.value,
        "reasons": v.reasons,
        "retake_offered": v.retake_offered,
        "policy_version": v.policy_version,
        "thresholds": v.thresholds,
        "models": v.models,
        "manifest_sha256": v.manifest_sha256,
        "created_at": iso(v.created_at),
    }


def review_view(r: Review) -> dict[str, Any]:
    """A reviewer's decision as JSON (API and evidence package share it)."""
    return {
        "id": r.id,
        "verdict_id": r.verdict_id,
        "reviewer_id": r.reviewer_id,
        "decision": r.decision.value,
        "comment": r.comment,
        "created_at": iso(r.created_at),
    }


def _json_bytes(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _audit_full(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "ts": iso(row.ts),
        "actor": row.actor,
        "action": row.action,
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "details": row.details,
        "prev_hash": row.prev_hash,
        "row_hash": row.row_hash,
    }


def _audit_segment(db: Session, subjects: set[str], person_id: str) -> tuple[list[dict[str, Any]], int]:
    """Audit rows from the first about `subjects` to the head; others reduced to their chain links."""

    def relevant(row: AuditEntry) -> bool:
        return row.subject_id in subjects or (row.subject_type == "person" and row.subject_id == person_id)

    first = db.scalar(
        select(AuditEntry.id)
        .where(
            or_(
                AuditEntry.subject_id.in_(subjects),
                (AuditEntry.subject_type == "person") & (AuditEntry.subject_id == person_id),
            )
        )
        .order_by(AuditEntry.id)
        .limit(1)
    )
    if first is None:
        return [], 0
    out: list[dict[str, Any]] = []
    full = 0
    rows = db.scalars(select(AuditEntry).where(AuditEntry.id >= first).order_by(AuditEntry.id))
    for row in rows:
        if relevant(row):
            out.append(_audit_full(row))
            full += 1
        else:
            out.append({"id": row.id, "prev_hash": row.prev_hash, "row_hash": row.row_hash})
    return out, full


# Where the platform's mimetypes table is wrong or silent (it maps Matroska to ".mpv").
_EXTENSIONS = {"video/webm": ".webm", "video/x-matroska": ".mkv", "video/mp4": ".mp4"}


def _extension(content_type: str) -> str:
    media_type = content_type.split(";")[0].strip().lower()
    return _EXTENSIONS.get(media_type) or mimetypes.guess_extension(media_type) or ".bin"


class _Writer:
    """Writes members into the ZIP and records their sha256 and size for the manifest."""

    def __init__(self, zf: zipfile.ZipFile, when: datetime) -> None:
        self.zf = zf
        self.date_time = when.astimezone(UTC).timetuple()[:6]
        self.files: list[dict[str, Any]] = []

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info

    def add_bytes(self, name: str, data: bytes, *, listed: bool = True) -> None:
        self.zf.writestr(self._info(name), data)
        if listed:
            self.files.append({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})

    def add_stream(self, name: str, src: IO[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with self.zf.open(self._info(name), "w", force_zip64=True) as dst:
            while chunk := src.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        self.files.append({"path": name, "sha256": digest.hexdigest(), "size": size})
        return digest.hexdigest(), size


def write_package(
    db: Session,
    store: EvidenceStore,
    session_id: str,
    signing_key: EvidenceSigner,
    out: IO[bytes],
    *,
    exporter: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the evidence package of `session_id` as a ZIP into `out`; returns the manifest.

    Appends an `evidence.export` audit entry and commits it, so the package's audit segment ends
    with its own export. Artifacts are read back verified; one that is missing or fails its hash is
    listed under `unavailable` in the manifest instead of being packaged.
    """
    session = db.get(CheckSession, session_id)
    if session is None:
        raise PackageError(f"no such session: {session_id}")
    exported_at = (now or datetime.now(UTC)).astimezone(UTC)
    artifacts = db.scalars(
        select(Artifact).where(Artifact.session_id == session_id).order_by(Artifact.created_at, Artifact.id)
    ).all()
    checks = db.scalars(
        select(CheckResultRecord)
        .where(CheckResultRecord.session_id == session_id)
        .order_by(CheckResultRecord.created_at, CheckResultRecord.id)
    ).all()
    verdicts = db.scalars(
        select(Verdict).where(Verdict.session_id == session_id).order_by(Verdict.created_at, Verdict.id)
    ).all()
    reviews = db.scalars(
        select(Review).where(Review.session_id == session_id).order_by(Review.created_at, Review.id)
    ).all()

    export_entry = audit.append(
        db, exporter, "evidence.export", "session", session_id, {"exported_at": exported_at.isoformat()}
    )
    db.commit()
    chain = audit.verify_chain(db)
    subjects = {session_id, *(a.id for a in artifacts), *(v.id for v in verdicts), *(r.id for r in reviews)}
    segment, full_rows = _audit_segment(db, subjects, session.person_id)
    segment = [row for row in segment if row["id"] <= export_entry.id]

    pub_b64 = public_key_b64(signing_key)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        writer = _Writer(zf, exported_at)
        packaged: list[dict[str, Any]] = []
        unavailable: list[dict[str, Any]] = []
        for art in artifacts:
            path = f"artifacts/{art.id}{_extension(art.content_type)}"
            try:
                with store.open_verified(art.key, version_id=art.version_id) as src:
                    sha, size = writer.add_stream(path, src)
            except EvidenceError as exc:
                unavailable.append(
                    {"artifact_id": art.id, "key": art.key, "reason": f"{type(exc).__name__}: {exc}"}
                )
                continue
            if sha != art.sha256:
                # The store verified the content address; a row naming another hash is a database fault.
                unavailable.append(
                    {
                        "artifact_id": art.id,
                        "key": art.key,
                        "reason": f"database row names sha256 {art.sha256}",
                    }
                )
            packaged.append(
                {
                    "path": path,
                    "artifact_id": art.id,
                    "key": art.key,
                    "sha256": sha,
                    "size": size,
                    "content_type": art.content_type,
                    "kind": art.kind.value,
                    "created_at": iso(art.created_at),
                    "meta": art.meta,
                }
            )
        session_doc = {
            "id": session.id,
            "person_id": session.person_id,
            "kind": session.kind.value,
            "status": session.status.value,
            "window_start": iso(session.window_start),
            "window_end": iso(session.window_end),
            "started_at": iso(session.started_at),
            "ended_at": iso(session.ended_at),
            "device_id": session.device_id,
            "location": session.location,
            "challenge": session.challenge,
            "created_at": iso(session.created_at),
        }
        check_docs = [{"id": c.id, "created_at": iso(c.created_at), **c.to_check().to_dict()} for c in checks]
        verdict_docs = [verdict_view(v) for v in verdicts]
        review_docs = [review_view(r) for r in reviews]
        writer.add_bytes("session.json", _json_bytes(session_doc))
        writer.add_bytes("checks.json", _json_bytes(check_docs))
        writer.add_bytes("verdict.json", _json_bytes(verdict_docs))
        writer.add_bytes("reviews.json", _json_bytes(review_docs))
        writer.add_bytes(AUDIT, _json_bytes({"rows": segment}))
        writer.add_bytes(PUBLIC_KEY, (pub_b64 + "\n").encode())
        writer.add_bytes(README, _readme(pub_b64).encode())

        models: dict[str, Any] = {}
        thresholds: dict[str, Any] = {}
        for v in verdicts:
            models.update(v.models)
            thresholds.update(v.thresholds)
        for c in checks:
            if c.model_name:
                models.setdefault(
                    c.model_name,
                    {"name": c.model_name, "version": c.model_version, "weights_sha256": c.weights_sha256},
                )
            if c.threshold is not None:
                thresholds.setdefault(f"{c.kind.value}.{c.code}", c.threshold)
        manifest = {
            "format": PACKAGE_FORMAT,
            "session_id": session_id,
            "person_id": session.person_id,
            "exported_at": exported_at.isoformat(),
            "exporter": exporter,
            "policy_version": verdicts[-1].policy_version if verdicts else POLICY_VERSION,
            "models": models,
            "thresholds": thresholds,
            "files": sorted(writer.files, key=lambda f: f["path"]),
            "artifacts": packaged,
            "unavailable": unavailable,
            "audit": {
                "export_entry_id": export_entry.id,
                "head": {"id": chain.head.id, "row_hash": chain.head.row_hash} if chain.head else None,
                "segment_rows": len(segment),
                "segment_full_rows": full_rows,
                "chain_verified_at_export": chain.ok,
                "chain_problem": chain.reason,
            },
            "signing_key_sha256": fingerprint(pub_b64),
        }
        manifest_bytes = _json_bytes(manifest)
        writer.add_bytes(MANIFEST, manifest_bytes, listed=False)
        writer.add_bytes(SIGNATURE, base64.b64encode(signing_key.sign(manifest_bytes)) + b"\n", listed=False)
    return manifest


def export_package(
    db: Session,
    store: EvidenceStore,
    session_id: str,
    signing_key: EvidenceSigner,
    *,
    exporter: str = "kuzet",
    now: datetime | None = None,
) -> bytes:
    """The evidence package of `session_id` as ZIP bytes (see `write_package`)."""
    buf = io.BytesIO()
    write_package(db, store, session_id, signing_key, buf, exporter=exporter, now=now)
    return buf.getvalue()


def _readme(pub_b64: str) -> str:
    return f"""Kuzet evidence package ({PACKAGE_FORMAT})

What is inside
  manifest.json   every file below with its SHA-256 and size, the models and thresholds the
                  verdict was judged under, the export time, who exported it, and the audit head.
  manifest.sig    Ed25519 signature (base64) of the exact bytes of manifest.json.
  signing_key.pub the service's Ed25519 public key, raw 32 bytes, base64.
  artifacts/      the recorded evidence (video, audio, photos, readings), byte for byte as stored;
                  each file's SHA-256 is also its key in the evidence store.
  session.json, checks.json, verdict.json, reviews.json   the database records of the session.
  audit.json      the audit-log segment from this session's first entry to this export. Each row's
                  row_hash is SHA-256 of canonical JSON (sorted keys, no spaces, ASCII) of
                  ts, actor, action, subject_type, subject_id, details, prev_hash; each prev_hash
                  equals the row_hash of the row before it. Rows about other subjects show only
                  id, prev_hash and row_hash.

How to verify
  1. Trust the key: the SHA-256 of the raw public key must equal the fingerprint the service
     operator publishes (`kuzet evidence pubkey`). This package's key fingerprint:
       {fingerprint(pub_b64)}
  2. With the Kuzet tool:  kuzet evidence verify PACKAGE.zip --pubkey PUBLISHED_KEY_BASE64
     (or --fingerprint PUBLISHED_FINGERPRINT); it also checks verdict.json against audit.json.
  3. Without it (OpenSSL 3):
       base64 -d manifest.sig > manifest.sig.bin
       openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile manifest.sig.bin
     where key.pem is:
{public_key_pem(pub_b64)}
     then compare `sha256sum` of every file with manifest.json "files".
"""


# -- verification ---------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """The outcome of `verify_package`: ok only when `problems` is empty."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    session_id: str | None = None
    key_fingerprint: str | None = None
    key_trusted: bool = False
    audit_rows: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems

    def lines(self) -> Iterable[str]:
        """A human-readable report, one line each."""
        yield f"session      {self.session_id or '-'}"
        trust = "trusted" if self.key_trusted else "NOT checked against a trusted key"
        yield f"signing key  {self.key_fingerprint or '-'} ({trust})"
        yield f"files        {len(self.checked)} verified"
        yield f"audit rows   {self.audit_rows} linked"
        for w in self.warnings:
            yield f"warning      {w}"
        for p in self.problems:
            yield f"FAILED       {p}"
        yield "result       " + ("OK" if self.ok else "FAILED")


def _check_audit(segment: object, manifest_audit: object, report: VerifyReport) -> None:
    # segment and manifest_audit are untrusted JSON from the package: shapes are checked, never assumed.
    rows = segment.get("rows") if isinstance(segment, dict) else None
    if not isinstance(rows, list):
        report.problems.append(f"{AUDIT}: no rows")
        return
    prev: dict[str, Any] | None = None
    for row in rows:
        try:
            rid = int(row["id"])
            if prev is not None:
                if rid != int(prev["id"]) + 1:
                    report.problems.append(f"{AUDIT}: row {rid} follows row {prev['id']}: rows are missing")
                    return
                if row["prev_hash"] != prev["row_hash"]:
                    report.problems.append(f"{AUDIT}: row {rid} does not link to row {prev['id']}")
                    return
            elif rid == 1 and row["prev_hash"] != GENESIS_HASH:
                report.problems.append(f"{AUDIT}: row 1 does not start the chain")
                return
            if "ts" in row:
                recomputed = audit.compute_row_hash(
                    ts=datetime.fromisoformat(row["ts"]),
                    actor=row["actor"],
                    action=row["action"],
                    subject_type=row["subject_type"],
                    subject_id=row["subject_id"],
                    details=row["details"],
                    prev_hash=row["prev_hash"],
                )
                if recomputed != row["row_hash"]:
                    report.problems.append(f"{AUDIT}: row {rid} does not match its row_hash (altered)")
                    return
        except (KeyError, TypeError, ValueError) as exc:
            report.problems.append(f"{AUDIT}: malformed row: {exc}")
            return
        prev = row
        report.audit_rows += 1
    if isinstance(manifest_audit, dict):
        export_id = manifest_audit.get("export_entry_id")
        if prev is None or (export_id is not None and int(prev["id"]) != int(export_id)):
            report.problems.append(f"{AUDIT}: the segment does not end at the export entry {export_id}")
        if manifest_audit.get("chain_verified_at_export") is False:
            report.warnings.append(
                f"the audit chain failed verification at export: {manifest_audit.get('chain_problem')}"
            )


def verify_package(
    data: bytes | IO[bytes],
    trusted_pubkey_b64: str | None = None,
    *,
    trusted_fingerprint: str | None = None,
) -> VerifyReport:
    """Check a package: member hashes and sizes, missing/extra members, the signature against a
    trusted key (the key itself or its pinned SHA-256 fingerprint: without either the package fails,
    since anyone can re-sign a changed package with their own key), the audit segment, and that
    verdict.json and reviews.json say what the package's own audit rows recorded."""
    report = VerifyReport()
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError) as exc:
        report.problems.append(f"not a ZIP archive: {exc}")
        return report
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        if len(names) != len(set(names)):
            report.problems.append("the archive holds the same name twice")
        missing = sorted(_REQUIRED - set(names))
        if missing:
            report.problems.append("missing: " + ", ".join(missing))
            return report

        def read(name: str) -> bytes | None:
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:  # a corrupted member fails its CRC
                report.problems.append(f"{name}: unreadable ({exc})")
                return None

        manifest_bytes = read(MANIFEST)
        sig_text = read(SIGNATURE)
        pub_text = read(PUBLIC_KEY)
        if manifest_bytes is None or sig_text is None or pub_text is None:
            return report
        # Signature first: nothing in an unsigned manifest is worth checking against.
        try:
            pub_b64 = pub_text.decode().strip()
            pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub_b64, validate=True))
            report.key_fingerprint = fingerprint(pub_b64)
            pub.verify(base64.b64decode(sig_text.strip(), validate=True), manifest_bytes)
        except InvalidSignature:
            report.problems.append(f"{SIGNATURE}: the signature does not match {MANIFEST} (manifest altered)")
        except ValueError as exc:
            report.problems.append(f"{PUBLIC_KEY}/{SIGNATURE}: malformed ({exc})")
            return report
        _check_trust(pub_b64, trusted_pubkey_b64, trusted_fingerprint, report)
        try:
            manifest = json.loads(manifest_bytes)
            files = {str(f["path"]): (str(f["sha256"]), int(f["size"])) for f in manifest["files"]}
        except (ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"{MANIFEST}: malformed ({exc})")
            return report
        if manifest.get("format") != PACKAGE_FORMAT:
            report.problems.append(f"{MANIFEST}: unknown format {manifest.get('format')!r}")
        report.session_id = manifest.get("session_id")
        for name in sorted(set(names) - set(files) - _UNLISTED):
            report.problems.append(f"{name}: not listed in the manifest (added)")
        for name, (sha, size) in sorted(files.items()):
            if name not in names:
                report.problems.append(f"{name}: listed in the manifest but missing")
                continue
            digest = hashlib.sha256()
            length = 0
            try:
                with zf.open(name) as src:
                    while chunk := src.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        length += len(chunk)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                report.problems.append(f"{name}: unreadable ({exc})")
                continue
            if digest.hexdigest() != sha or length != size:
                report.problems.append(f"{name}: sha256/size differ from the manifest (altered)")
                continue
            report.checked.append(name)
        for art in manifest.get("artifacts") or []:
            key = str(art.get("key", ""))
            if key.rsplit("/", 1)[-1] != art.get("sha256"):
                report.problems.append(f"{art.get('path')}: content does not match its evidence key {key}")
        for gone in manifest.get("unavailable") or []:
            report.warnings.append(f"artifact {gone.get('artifact_id')} not packaged: {gone.get('reason')}")
        audit_bytes = read(AUDIT)
        if audit_bytes is not None:
            try:
                segment = json.loads(audit_bytes)
                _check_audit(segment, manifest.get("audit"), report)
                reviews_bytes = read("reviews.json") if "reviews.json" in names else None
                _check_records_against_audit(read("verdict.json"), reviews_bytes, segment, report)
            except ValueError as exc:
                report.problems.append(f"{AUDIT}: malformed ({exc})")
    return report


def _normalise_fingerprint(text: str) -> str:
    return text.strip().lower().replace(":", "").removeprefix("sha256").lstrip(":= ")


def _check_trust(
    pub_b64: str, trusted_pubkey_b64: str | None, trusted_fingerprint: str | None, report: VerifyReport
) -> None:
    if trusted_pubkey_b64 is not None:
        try:
            trusted = base64.b64decode(trusted_pubkey_b64.strip(), validate=True)
        except ValueError:
            report.problems.append("the trusted public key given is not base64")
            return
        if trusted == base64.b64decode(pub_b64):
            report.key_trusted = True
        else:
            report.problems.append(f"{PUBLIC_KEY}: signed by another key than the trusted one")
        return
    if trusted_fingerprint is not None:
        if _normalise_fingerprint(trusted_fingerprint) == fingerprint(pub_b64):
            report.key_trusted = True
        else:
            report.problems.append(f"{PUBLIC_KEY}: its fingerprint is not the pinned one (another key)")
        return
    report.problems.append(
        "no trusted key given: a package re-signed with any key verifies against its own; pass the "
        "service's published key (--pubkey) or its fingerprint (--fingerprint, `kuzet evidence pubkey`)"
    )


def _audited_verdicts(rows: list[object], session_id: str | None) -> dict[str, str]:
    """verdict id -> decision, as the audit rows of the segment recorded them."""
    out: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        details = row.get("details")
        if not isinstance(details, dict) or "review_id" in details:
            continue
        if "verdict_id" in details and "decision" in details and row.get("subject_id") == session_id:
            out[str(details["verdict_id"])] = str(details["decision"])
        elif row.get("subject_type") == "verdict" and "decision" in details:
            out[str(row.get("subject_id"))] = str(details["decision"])
    return out


def _audited_reviews(rows: list[object], session_id: str | None) -> dict[str, str]:
    """review id -> decision, as the audit rows of the segment recorded them."""
    out: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        details = row.get("details")
        if isinstance(details, dict) and "review_id" in details and row.get("subject_id") == session_id:
            out[str(details["review_id"])] = str(details.get("decision"))
    return out


def _check_records_against_audit(
    verdict_bytes: bytes | None, review_bytes: bytes | None, segment: object, report: VerifyReport
) -> None:
    """verdict.json must hold exactly the verdicts the audit segment recorded, with the same
    decisions; every audited review must be in reviews.json with its decision."""
    rows = segment.get("rows") if isinstance(segment, dict) else None
    if not isinstance(rows, list) or verdict_bytes is None:
        return
    try:
        verdicts = {str(v["id"]): str(v["decision"]) for v in json.loads(verdict_bytes)}
        reviews = {str(r["id"]): str(r["decision"]) for r in json.loads(review_bytes or b"[]")}
    except (ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"verdict.json/reviews.json: malformed ({exc})")
        return
    audited = _audited_verdicts(rows, report.session_id)
    for vid, decision in sorted(verdicts.items()):
        if vid not in audited:
            report.problems.append(f"verdict.json: verdict {vid} has no entry in the audit segment")
        elif audited[vid] != decision:
            report.problems.append(
                f"verdict.json: verdict {vid} says {decision!r}, the audit log recorded {audited[vid]!r}"
            )
    for vid in sorted(set(audited) - set(verdicts)):
        report.problems.append(f"verdict.json: the audited verdict {vid} ({audited[vid]}) is missing")
    for rid, decision in sorted(_audited_reviews(rows, report.session_id).items()):
        if review_bytes is None:
            break  # reported as missing already
        if rid not in reviews:
            report.problems.append(f"reviews.json: the audited review {rid} is missing")
        elif reviews[rid] != decision:
            report.problems.append(
                f"reviews.json: review {rid} says {reviews[rid]!r}, the audit log recorded {decision!r}"
            )
