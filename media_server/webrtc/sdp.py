"""SDP offer checks done before an RTCPeerConnection exists, and candidate filtering for loopback."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from media_server.errors import BadInput

# What aiortc can receive: VP8/H264 video, Opus audio (ENVIRONMENT.md).
SUPPORTED_CODECS: dict[str, frozenset[str]] = {
    "video": frozenset({"vp8", "h264"}),
    "audio": frozenset({"opus"}),
}
NO_CODEC_MESSAGE = "no supported codec (VP8, H264, Opus)"

_LINE = re.compile(r"^[a-z]=.*$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d{1,3}) ([A-Za-z0-9_.-]+)/\d+")


@dataclass(frozen=True, slots=True)
class OfferSummary:
    """What a valid offer carries: media kinds with a supported codec, and whether it has data."""

    media: tuple[str, ...]
    codecs: dict[str, tuple[str, ...]]
    has_data_channel: bool


def validate_offer(body: bytes, *, max_bytes: int) -> tuple[str, OfferSummary]:
    """Decode and check an SDP offer; BadInput with a message a client developer can act on."""
    if not body:
        raise BadInput("empty SDP offer")
    if len(body) > max_bytes:
        raise BadInput(f"SDP offer larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("SDP offer is not UTF-8 text") from exc
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise BadInput("not an SDP offer: the first line must be v=0")
    for number, line in enumerate(lines, start=1):
        if not _LINE.match(line):
            raise BadInput(f"malformed SDP line {number}")
    if not any(line.startswith("o=") for line in lines):
        raise BadInput("SDP offer has no o= line")

    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                raise BadInput("malformed SDP m= line")
            sections.append((parts[0], []))
        elif sections:
            sections[-1][1].append(line)

    av = [(kind, body_lines) for kind, body_lines in sections if kind in SUPPORTED_CODECS]
    if not av:
        raise BadInput("SDP offer has no m=video or m=audio section")
    codecs: dict[str, tuple[str, ...]] = {}
    for kind, body_lines in av:
        names = {m.group(2).lower() for line in body_lines if (m := _RTPMAP.match(line))}
        found = sorted(names & SUPPORTED_CODECS[kind])
        if found:
            codecs[kind] = tuple(sorted(set(codecs.get(kind, ())) | set(found)))
    if not codecs:
        raise BadInput(NO_CODEC_MESSAGE)

    has_ice = any(line.startswith("a=ice-ufrag:") for line in lines)
    has_fingerprint = any(line.startswith("a=fingerprint:") for line in lines)
    if not (has_ice and has_fingerprint):
        raise BadInput("SDP offer lacks ICE credentials or a DTLS fingerprint")
    _parse_with_aiortc(text)
    return text, OfferSummary(
        media=tuple(sorted(codecs)),
        codecs=codecs,
        has_data_channel=any(kind == "application" for kind, _ in sections),
    )


def _parse_with_aiortc(text: str) -> None:
    # aiortc's own parser is pure (no sockets): if it chokes, say so as a 400 instead of a 500 later.
    from aiortc import sdp

    try:
        sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise BadInput(f"SDP offer could not be parsed ({type(exc).__name__})") from exc


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # mDNS hostnames and garbage


def keep_loopback_candidates(sdp_text: str) -> str:
    """Drop every `a=candidate` line whose address is not loopback (127.0.0.1, ::1)."""
    kept: list[str] = []
    for line in sdp_text.split("\r\n") if "\r\n" in sdp_text else sdp_text.split("\n"):
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 6 or not _is_loopback(fields[4]):
                continue
        kept.append(line)
    return ("\r\n" if "\r\n" in sdp_text else "\n").join(kept)
