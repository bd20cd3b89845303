"""SpeechBrain ECAPA-TDNN engine (production where its weights can be provisioned).

Loaded from a local directory with the network off: `<models dir>/<settings.ecapa_dir>` must hold
SpeechBrain's `hyperparams.yaml` and checkpoints, and `embedding_model.ckpt` must match the sha256
pinned for "speechbrain_ecapa_voxceleb" in models/manifest.json. Imports torch and speechbrain: build
it only inside worker processes. Missing weights or a missing speechbrain raise ModelError with a
message saying which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from identity.checks import ModelStamp
from identity.models import ModelEntry, ModelError, verified_path
from identity.voice.audio import Pcm16k
from identity.voice.config import VoiceSettings
from identity.voice.engines import Embedding, l2_normalise

MANIFEST_NAME = "speechbrain_ecapa_voxceleb"
_DIM = 192


def check_provisioned(
    models_dir: Path, settings: VoiceSettings, manifest: dict[str, ModelEntry] | None = None
) -> tuple[Path, ModelEntry]:
    """The verified ECAPA model directory and manifest entry; ModelError naming what is missing."""
    try:
        ckpt, entry = verified_path(MANIFEST_NAME, models_dir, manifest)
    except ModelError as exc:
        raise ModelError(
            f"ECAPA weights not provisioned: {exc}. Provision them per models/README.md "
            "(or set KUZET_VOICE__ENGINE=resemblyzer)."
        ) from exc
    model_dir = models_dir / settings.ecapa_dir
    if not (model_dir / "hyperparams.yaml").is_file():
        raise ModelError(f"ECAPA weights not provisioned: {model_dir / 'hyperparams.yaml'} is missing")
    if ckpt.parent.resolve() != model_dir.resolve():
        raise ModelError(f"ECAPA weights not provisioned: {ckpt} is not inside {model_dir}")
    return model_dir, entry


class EcapaEngine:
    """ECAPA-TDNN (VoxCeleb) speaker encoder; 192-d embeddings."""

    def __init__(self, classifier: Any, stamp: ModelStamp) -> None:
        self._classifier = classifier
        self._stamp = stamp

    @classmethod
    def load(
        cls, models_dir: Path, settings: VoiceSettings, manifest: dict[str, ModelEntry] | None = None
    ) -> EcapaEngine:
        """Verify the provisioned weights, then load them offline; ModelError when either is missing."""
        model_dir, entry = check_provisioned(models_dir, settings, manifest)
        # Never reach a model hub: the directory is the only source.
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import torch
            from speechbrain.inference.speaker import EncoderClassifier  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ModelError(
                f"speechbrain not installed ({exc}); install speechbrain to use the ECAPA engine"
            ) from exc
        torch.set_num_threads(settings.torch_threads)
        classifier = EncoderClassifier.from_hparams(
            source=str(model_dir), savedir=str(model_dir), run_opts={"device": "cpu"}
        )
        if classifier is None:
            raise ModelError(f"ECAPA weights not provisioned: SpeechBrain could not load {model_dir}")
        return cls(classifier, entry.stamp())

    @property
    def stamp(self) -> ModelStamp:
        """Stamp of the verified ECAPA weights."""
        return self._stamp

    @property
    def dim(self) -> int:
        """192."""
        return _DIM

    def embed(self, speech_pcm16k: Pcm16k) -> Embedding:
        """ECAPA embedding of 16 kHz speech; shape (192,), unit norm."""
        import torch

        with torch.no_grad():
            wav = torch.from_numpy(np.ascontiguousarray(speech_pcm16k, dtype=np.float32))[None, :]
            emb = self._classifier.encode_batch(wav).reshape(-1).cpu().numpy()
        return l2_normalise(emb)
