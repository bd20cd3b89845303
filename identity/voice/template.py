"""Voice templates: the enrolment embeddings plus metadata, and a pickle-free byte format.

Format: b"KZVT" + version byte + uint32 LE header length + UTF-8 JSON header + float32 LE matrix
(n_embeddings x dim). Encryption at rest is the service's job; these are the plaintext bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from identity.checks import ModelStamp
from identity.voice.engines import Embedding, l2_normalise

_MAGIC = b"KZVT"
_VERSION = 1
_HEAD = struct.Struct("<4sBI")


class TemplateError(ValueError):
    """Template bytes are malformed or from another format version."""


@dataclass(frozen=True)
class VoiceTemplate:
    """A set of enrolment embeddings from one speaker, shape (n, dim), each unit-norm."""

    engine: ModelStamp
    embeddings: npt.NDArray[np.float32]
    speech_s: list[float] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def centroid(self) -> Embedding:
        """Unit-norm mean of the enrolment embeddings; shape (dim,)."""
        return l2_normalise(self.embeddings.mean(axis=0))

    @property
    def n(self) -> int:
        """Number of enrolment utterances."""
        return int(self.embeddings.shape[0])


def template_to_bytes(template: VoiceTemplate) -> bytes:
    """Serialise a template (no pickle)."""
    emb = np.ascontiguousarray(template.embeddings, dtype="<f4")
    if emb.ndim != 2:
        raise TemplateError(f"embeddings must be 2-D, got shape {emb.shape}")
    header = json.dumps(
        {
            "engine": template.engine.to_dict(),
            "shape": list(emb.shape),
            "speech_s": [float(s) for s in template.speech_s],
            "metadata": template.metadata,
        },
        sort_keys=True,
    ).encode()
    return _HEAD.pack(_MAGIC, _VERSION, len(header)) + header + emb.tobytes()


def template_from_bytes(data: bytes) -> VoiceTemplate:
    """Inverse of `template_to_bytes`; TemplateError on anything malformed."""
    if len(data) < _HEAD.size:
        raise TemplateError("template too short")
    magic, version, header_len = _HEAD.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise TemplateError(f"not a version-{_VERSION} voice template")
    try:
        header = json.loads(data[_HEAD.size : _HEAD.size + header_len])
        n, dim = (int(v) for v in header["shape"])
        engine = ModelStamp(**header["engine"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TemplateError(f"bad template header: {exc}") from exc
    body = data[_HEAD.size + header_len :]
    if len(body) != n * dim * 4:
        raise TemplateError(f"template body is {len(body)} bytes, expected {n * dim * 4}")
    emb = np.frombuffer(body, dtype="<f4").reshape(n, dim).astype(np.float32)
    return VoiceTemplate(engine, emb, list(header.get("speech_s", [])), dict(header.get("metadata", {})))
