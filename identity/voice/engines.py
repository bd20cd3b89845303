"""Speaker engines: 16 kHz speech in, one L2-normalised embedding out.

The Protocol lives here (light); implementations import torch and their libraries only when built,
inside worker processes: `engine_resemblyzer.py` (default, weights in the wheel) and
`engine_ecapa.py` (SpeechBrain ECAPA-TDNN, provisioned weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from identity.checks import ModelStamp
from identity.voice.audio import Pcm16k
from identity.voice.config import SpeakerEngineKind, VoiceSettings

Embedding = npt.NDArray[np.float32]
"""One L2-normalised speaker embedding, shape (dim,)."""


class SpeakerEngine(Protocol):
    """Turns speech into a speaker embedding."""

    @property
    def stamp(self) -> ModelStamp:
        """Model name, version and weights hash every result carries."""
        ...

    @property
    def dim(self) -> int:
        """Embedding length."""
        ...

    def embed(self, speech_pcm16k: Pcm16k) -> Embedding:
        """Embedding of silence-trimmed 16 kHz speech; shape (dim,), unit L2 norm."""
        ...


def l2_normalise(x: npt.NDArray[np.floating]) -> Embedding:
    """Row-wise unit L2 norm; works on (dim,) and (n, dim)."""
    arr = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(arr, axis=-1, keepdims=True)
    out: Embedding = (arr / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


def load_engine(models_dir: Path, settings: VoiceSettings) -> SpeakerEngine:
    """Build the configured engine; raises identity.models.ModelError when it cannot load."""
    if settings.engine is SpeakerEngineKind.ECAPA:
        from identity.voice.engine_ecapa import EcapaEngine

        return EcapaEngine.load(models_dir, settings)
    from identity.voice.engine_resemblyzer import ResemblyzerEngine

    return ResemblyzerEngine.load(models_dir, settings)
