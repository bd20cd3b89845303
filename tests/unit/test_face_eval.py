"""`kuzet eval face` on a small slice of the LFW dev pairs: the metrics are computed and sane."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from identity.face.evaluate import format_report
from media_server.cli import main

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "faces"


def test_eval_face_on_twenty_pairs() -> None:
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "face",
            "--pairs",
            str(FACES / "lfw-dev-pairs.csv"),
            "--root",
            str(FACES),
            "--limit",
            "20",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    m = report["metrics"]
    assert m["n_pairs"] == 20 and m["n_genuine"] == 10 and m["n_impostor"] == 10
    for key in ("accuracy_2fold", "eer", "tar_at_far_1%", "tar_at_far_0.1%"):
        assert 0.0 <= m[key] <= 1.0
    assert m["accuracy_2fold"] > 0.8
    assert 0.0 <= report["failure_to_enrol_rate"] <= 1.0
    assert report["ms_per_image"]["probe"] > 0
    assert len(report["scores"]) == 20 and len(report["roc"]["far"]) == len(report["roc"]["tar"])
    # The shipped calibration was made on these LFW dev images: the evaluation must say so, loudly.
    c = report["calibrated"]
    assert c["overlap_images"] == c["eval_images"] > 0 and c["provenance"]["cross_validated"]
    text = format_report(report)
    assert "WARNING: " in text and "IN-SAMPLE" in text and "identity-grouped CV" in text
