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


def test_positive_reading_without_a_face_match_is_review_not_violation() -> None:
    """A confirmed positive reading that cannot be attributed to the person is not their violation."""
    checks = [
        result(CheckKind.BREATH_SIGNATURE, Outcome.PASS),
        result(CheckKind.BREATH_READING, Outcome.FAIL, "over_limit"),
        result(CheckKind.BREATH_PHOTO, Outcome.PASS),
        result(CheckKind.FACE, Outcome.INCONCLUSIVE, "borderline"),
        result(CheckKind.PHOTO_REUSE, Outcome.PASS),
    ]
    required = [CheckKind.BREATH_SIGNATURE, CheckKind.BREATH_READING, CheckKind.FACE]
    v = decide(checks, required)
    assert v.decision is Decision.REVIEW
    assert any(r.startswith("unattributed:") for r in v.reasons)
    # the same reading with the face matched is the person's violation
    matched = [c if c.kind is not CheckKind.FACE else result(CheckKind.FACE, Outcome.PASS) for c in checks]
    assert decide(matched, required).decision is Decision.FAIL
    # and without any face result at all it cannot be attributed either
    no_face = [c for c in checks if c.kind is not CheckKind.FACE]
    assert decide(no_face, [CheckKind.BREATH_READING]).decision is Decision.REVIEW


def test_advisory_checks_are_notes_and_never_decide() -> None:
    v = decide(
        [result(CheckKind.FACE, Outcome.PASS), result(CheckKind.LOCATION, Outcome.INCONCLUSIVE, "missing")],
        required=[CheckKind.FACE],
    )
    assert v.decision is Decision.PASS
    assert v.reasons[-1].startswith("note: location")


def test_a_result_marked_advisory_is_a_note_whatever_its_kind() -> None:
    """Digits of a person not enrolled for them are a note, not a REVIEW of their own."""
    note = CheckResult(
        CheckKind.SPOKEN_DIGITS,
        Outcome.INCONCLUSIVE,
        "not_enrolled",
        "not enrolled",
        details={"advisory": True},
    )
    v = decide([result(CheckKind.FACE, Outcome.PASS), note], required=[CheckKind.FACE])
    assert v.decision is Decision.PASS and v.reasons[-1].startswith("note: spoken_digits")
    unsure = CheckResult(CheckKind.SPOKEN_DIGITS, Outcome.INCONCLUSIVE, "digits_mismatch", "mismatch")
    assert (
        decide([result(CheckKind.FACE, Outcome.PASS), unsure], [CheckKind.FACE]).decision is Decision.REVIEW
    )
