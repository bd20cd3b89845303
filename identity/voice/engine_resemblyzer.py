"""Resemblyzer GE2E d-vector engine (default): weights ship in the PyPI wheel, verified before load.

Imports torch and resemblyzer: build it only inside worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from identity.checks import ModelStamp
from identity.models import ModelError, verified_path
from identity.voice.audio import Pcm16k
from identity.voice.config import VoiceSettings
from identity.voice.engines import Embedding, l2_normalise

MANIFEST_NAME = "resemblyzer_ge2e"
_NORM_TARGET_DBFS = -30  # the level GE2E was trained at (resemblyzer.hparams.audio_norm_target_dBFS)
_MIN_COVERAGE = 0.5  # keep a last partial window that is at least half full


class ResemblyzerEngine:
    """GE2E speaker encoder; 256-d embeddings averaged over sliding 1.6 s partial windows."""

    def __init__(self, encoder: Any, stamp: ModelStamp, settings: VoiceSettings) -> None:
        self._encoder = encoder
        self._stamp = stamp
        self._rate = settings.partial_rate_hz

    @classmethod
    def load(cls, models_dir: Path, settings: VoiceSettings) -> ResemblyzerEngine:
        """Verify the wheel's weights against the manifest and load VoiceEncoder from that path."""
        path, entry = verified_path(MANIFEST_NAME, models_dir)
        try:
            import torch
            from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise ModelError(f"{MANIFEST_NAME}: resemblyzer not installed: {exc}") from exc
        torch.set_num_threads(settings.torch_threads)
        encoder = VoiceEncoder(device="cpu", verbose=False, weights_fpath=path)
        encoder.eval()
        return cls(encoder, entry.stamp(), settings)

    @property
    def stamp(self) -> ModelStamp:
        """Stamp of the verified GE2E weights."""
        return self._stamp

    @property
    def dim(self) -> int:
        """256."""
        return 256

    def embed(self, speech_pcm16k: Pcm16k) -> Embedding:
        """GE2E embedding of 16 kHz speech; shape (256,), unit norm."""
        from resemblyzer.audio import normalize_volume

        wav = normalize_volume(
            np.asarray(speech_pcm16k, dtype=np.float32), _NORM_TARGET_DBFS, increase_only=True
        )
        emb = self._encoder.embed_utterance(
            wav.astype(np.float32), rate=self._rate, min_coverage=_MIN_COVERAGE
        )
        return l2_normalise(emb)
