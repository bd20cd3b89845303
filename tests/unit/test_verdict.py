from identity.checks import CheckKind, CheckResult, ModelStamp, Outcome
from media_server.db.enums import Decision
from media_server.verdict import decide

STAMP = ModelStamp("dlib_resnet_face_v1", "1.0", "ab" * 32)


def result(kind: CheckKind, outcome: Outcome, code: str = "x", threshold: float | None = None) -> CheckResult:
    return CheckResult(
        kind, outcome, code, f"{kind.value} {outcome.value}", score=0.3, threshold=threshold, model=STAMP
    )


def test_all_required_pass_is_pass_and_records_thresholds_and_models() -> None:
    v = decide(
        [result(CheckKind.FACE, Outcome.PASS, "match", 0.45), result(CheckKind.PAD, Outcome.PASS)],
        required=[CheckKind.FACE, CheckKind.PAD],
    )
    assert v.decision is Decision.PASS
    assert v.thresholds == {"face.match": 0.45}
    assert v.models["dlib_resnet_face_v1"]["weights_sha256"] == "ab" * 32
    assert not v.retake_offered


def test_fail_without_technical_problem_is_fail() -> None:
    v = decide([result(CheckKind.FACE, Outcome.FAIL, "mismatch")], required=[CheckKind.FACE])
    assert v.decision is Decision.FAIL
    assert any(r.startswith("fail: face") for r in v.reasons)


def test_technical_failure_is_never_a_violation() -> None:
    v = decide(
        [
            result(CheckKind.FACE, Outcome.FAIL, "mismatch"),
            result(CheckKind.MEDIA, Outcome.TECHNICAL, "dropped"),
        ],
        required=[CheckKind.FACE],
    )
    assert v.decision is Decision.REVIEW
    assert v.retake_offered


def test_missing_required_check_goes_to_review_with_retake() -> None:
    v = decide([result(CheckKind.PAD, Outcome.PASS)], required=[CheckKind.FACE, CheckKind.PAD])
    assert v.decision is Decision.REVIEW
    assert "missing: face" in v.reasons[0]
    assert v.retake_offered


def test_inconclusive_goes_to_review_without_retake() -> None:
    v = decide([result(CheckKind.FACE, Outcome.INCONCLUSIVE, "borderline")], required=[CheckKind.FACE])
    assert v.decision is Decision.REVIEW
    assert not v.retake_offered
