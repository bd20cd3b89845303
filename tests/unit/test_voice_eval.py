"""Evaluation: trial building, EER / FNMR@FMR arithmetic, and `kuzet eval voice` on a small subset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from identity.voice.evaluate import build_trials, det_curve, eer, fnmr_at_fmr, read_manifest

REPO = Path(__file__).parents[2]
VOICE = REPO / ".." / "shared" / "data" / "voice"


def test_trials_are_all_unordered_pairs() -> None:
    genuine, impostor = build_trials(["a", "a", "a", "b", "b", "c"])
    assert len(genuine) == 3 + 1 and len(impostor) == 15 - 4
    assert all(i < j for i, j in genuine + impostor)


def test_eer_and_fnmr_on_known_scores() -> None:
    assert eer([0.9, 0.8, 0.7], [0.1, 0.2, 0.3]) == 0.0
    genuine = np.array([0.1, 0.6, 0.7, 0.8, 0.9])
    impostor = np.array([0.0, 0.05, 0.2, 0.3, 0.65])
    assert eer(genuine, impostor) == pytest.approx(0.2)  # one of five misses, one of five false matches
    assert fnmr_at_fmr(genuine, impostor, 0.0) == pytest.approx(0.4)  # threshold above 0.65
    fmr, fnmr, thr = det_curve(genuine, impostor)
    assert fmr[0] == 1.0 and fnmr[0] == 0.0 and fmr[-1] == 0.0 and fnmr[-1] == 1.0
    assert np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)


def test_manifest_prefix_filter() -> None:
    clips = read_manifest(VOICE / "manifest.csv", VOICE, "sc_")
    assert len(clips) == 60 and len({c.speaker for c in clips}) == 20
    assert all(c.path.is_file() for c in clips)


def test_cli_eval_voice_on_a_small_subset(tmp_path: Path) -> None:
    from media_server.cli import main

    rows = [r for r in csv.DictReader((VOICE / "manifest.csv").open()) if r["speaker"].startswith("sc_")][:12]
    rows += [r for r in csv.DictReader((VOICE / "manifest.csv").open()) if r["speaker"] == "fsdd_george"][:2]
    manifest = tmp_path / "small.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(
        main,
        ["eval", "voice", "--manifest", str(manifest), "--root", str(VOICE), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    # fsdd_george is a cohort speaker: held out of the trials
    assert report["excluded_cohort_speakers"] == ["fsdd_george"]
    assert report["n_clips"] == 12 and report["n_speakers"] == 4
    assert report["n_genuine_trials"] == 12 and report["n_impostor_trials"] == 66 - 12
    assert set(report["systems"]) == {"baseline", "pipeline", "pipeline_snorm", "pipeline_asnorm"}
    assert "(configured)" in report["systems"]["pipeline"]["description"]
    for figures in report["systems"].values():
        assert 0 <= figures["eer"] <= 0.5 and 0 <= figures["fnmr_at_fmr_0.01"] <= 1
    assert report["s_per_3s_audio"]["pipeline"] > 0 and report["model_load_s"]["pipeline"] > 0
