"""Produce the shipped voice tables: the score-normalisation cohort and the FMR calibration table.

    python -m identity.voice.build cohort --manifest ../shared/data/voice/manifest.csv \\
        --root ../shared/data/voice --speaker-prefix fsdd_
    python -m identity.voice.build calibration --manifest ../shared/data/voice/manifest.csv \\
        --root ../shared/data/voice --speaker-prefix sc_

Build the cohort first: calibration scores are normalised against it, and the cohort's speakers are
excluded from calibration (and evaluation) trials.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from identity.voice.config import ScoreNorm, VoiceSettings
from identity.voice.evaluate import build_trials, decode_clips, embed_clips, read_manifest
from identity.voice.pipeline import VoicePipeline
from identity.voice.scoring import CALIBRATION_PATH, Cohort, cohort_path, normalised_score, thresholds_at


def build_cohort(manifest: Path, root: Path, prefix: str, models_dir: Path, settings: VoiceSettings) -> Path:
    """Embed every clip of the prefix's speakers and save them as the engine's cohort; returns the path."""
    pipeline = VoicePipeline.load(models_dir, settings)
    clips = read_manifest(manifest, root, prefix)
    if not clips:
        raise ValueError(f"no clips with speaker prefix {prefix!r}")
    emb, _, _ = embed_clips(pipeline, decode_clips(clips, settings))
    speakers = tuple(sorted({c.speaker for c in clips}))
    source = f"{manifest.name} speakers with prefix {prefix!r}: {len(speakers)} speakers, {len(clips)} clips"
    cohort = Cohort(np.stack(emb).astype(np.float32), pipeline.engine.stamp, source, speakers)
    path = cohort_path(pipeline.engine.stamp.name)
    cohort.save(path)
    return path


def build_calibration(
    manifest: Path, root: Path, prefix: str, models_dir: Path, settings: VoiceSettings
) -> dict[str, object]:
    """Measure thresholds at each grid FMR on the prefix's impostor trials, per score normalisation."""
    pipeline = VoicePipeline.load(models_dir, settings)
    cohort = pipeline.cohort
    excluded = set(cohort.speakers) if cohort else set()
    clips = [c for c in read_manifest(manifest, root, prefix) if c.speaker not in excluded]
    emb, _, _ = embed_clips(pipeline, decode_clips(clips, settings))
    genuine, impostor = build_trials([c.speaker for c in clips])
    norms = [ScoreNorm.NONE] + ([ScoreNorm.SNORM, ScoreNorm.ASNORM] if cohort else [])
    data = (
        f"{manifest.name} prefix {prefix!r}: {len({c.speaker for c in clips})} speakers, {len(clips)} clips, "
        f"{len(impostor)} impostor trials"
    )
    entries = []
    for norm in norms:
        imp = np.array(
            [normalised_score(emb[i], emb[j], cohort, norm, settings.asnorm_top_k) for i, j in impostor]
        )
        entries.append(
            {
                "engine": pipeline.engine.stamp.name,
                "weights_sha256": pipeline.engine.stamp.weights_sha256,
                "score_norm": norm.value,
                "cohort": cohort.source if cohort and norm is not ScoreNorm.NONE else None,
                "data": data,
                "n_impostor_trials": len(impostor),
                "n_genuine_trials": len(genuine),
                "partial_rate_hz": settings.partial_rate_hz,
                "asnorm_top_k": settings.asnorm_top_k if norm is ScoreNorm.ASNORM else None,
                "table": thresholds_at(imp),
            }
        )
    table = {
        "schema": 1,
        "data": data,
        "command": "python -m identity.voice.build calibration " + " ".join(sys.argv[2:]),
        "note": "Thresholds are the lowest score whose measured FMR on these impostor trials is at most the "
        "target; rows with resolvable=false need more impostor trials than were available.",
        "entries": entries,
    }
    CALIBRATION_PATH.write_text(json.dumps(table, indent=2) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m identity.voice.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["cohort", "calibration"])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--speaker-prefix", required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    args = parser.parse_args(argv)
    settings = VoiceSettings()
    if args.what == "cohort":
        path = build_cohort(args.manifest, args.root, args.speaker_prefix, args.models_dir, settings)
        print(f"wrote {path}")
    else:
        table = build_calibration(args.manifest, args.root, args.speaker_prefix, args.models_dir, settings)
        print(f"wrote {CALIBRATION_PATH} ({table['data']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
