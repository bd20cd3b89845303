"""Translations of the workstation, the check-in page and check results (gettext catalogs, Russian first).

Source strings are English and live where they are used: templates call `_("...")`, and this module marks
the vocabularies (check names, outcome words, reasons per result code, units) with `N_`. The translations
are in media_server/locale/<lang>/LC_MESSAGES/kuzet.po; they are compiled in memory with Babel when a
language is first used, so no compiled .mo file has to be kept in step with its .po source.

Check results carry a stable `code` and `details`; `check_reason` renders them in the reader's language
from those, never from the English `message` (which stays the fallback for a code without a translation).
"""

from __future__ import annotations

import gettext
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

LANGS = ("ru", "kk", "en")
DEFAULT_LANG = "ru"
DOMAIN = "kuzet"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def N_(message: str) -> str:
    """Mark a string for extraction without translating it (translated later, in the reader's language)."""
    return message


def pick_lang(value: str | None) -> str:
    """A supported language code, Russian when `value` is unknown (the value is echoed into URLs)."""
    return value if value in LANGS else DEFAULT_LANG


@lru_cache(maxsize=len(LANGS))
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of `lang` (English source strings fall through unchanged)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    po = LOCALE_DIR / pick_lang(lang) / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po.open("rb") as f:
        catalog = read_po(f, locale=pick_lang(lang), domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


class _Params(dict[str, Any]):
    """format_map values that never raise: a missing parameter shows as '?'."""

    def __missing__(self, key: str) -> str:
        return "?"


@dataclass(frozen=True)
class Translator:
    """Translate source strings into one language; `{name}` placeholders are filled from keyword args."""

    lang: str

    def __call__(self, message: str, **params: Any) -> str:
        text = translations(self.lang).gettext(message)
        return text.format_map(_Params(params)) if params else text

    def ctx(self, context: str, message: str) -> str:
        """`message` translated within `context` (pgettext)."""
        return translations(self.lang).pgettext(context, message)


def translator(lang: str) -> Translator:
    """The translator of `lang` (Russian when unknown)."""
    return Translator(pick_lang(lang))


# --- vocabularies (stored enum values -> English source strings) ----------------------------------------

LANGUAGE_NAMES = {"ru": "Русский", "kk": "Қазақша", "en": "English"}

CHECK_NAMES: dict[str, str] = {
    "face": N_("Face match"),
    "face_quality": N_("Photo quality"),
    "voice": N_("Voice match"),
    "voice_quality": N_("Voice recording quality"),
    "pad": N_("Anti-spoofing (live face)"),
    "liveness": N_("Liveness challenge"),
    "av_sync": N_("Lips follow speech"),
    "spoken_digits": N_("Spoken digits"),
    "location": N_("Location"),
    "media": N_("Connection and media"),
    "breath_reading": N_("Breath reading"),
    "breath_signature": N_("Station signature"),
    "breath_photo": N_("Breath photos"),
    "photo_reuse": N_("Photo reuse"),
    "attendance": N_("Test taken in its window"),
}

OUTCOME_WORDS: dict[str, str] = {
    "pass": N_("passed"),
    "fail": N_("failed"),
    "inconclusive": N_("unsure"),
    "technical": N_("technical problem"),
}

DECISION_WORDS: dict[str, str] = {
    "pass": N_("Pass"),
    "fail": N_("Violation"),
    "review": N_("Needs review"),
}

SESSION_KINDS: dict[str, str] = {
    "checkin": N_("Phone check-in"),
    "station": N_("Home station check-in"),
    "breath": N_("Breath test"),
    "call": N_("Officer's video call"),
}

SESSION_STATUSES: dict[str, str] = {
    "scheduled": N_("scheduled"),
    "active": N_("in progress"),
    "completed": N_("completed"),
    "technical_failure": N_("interrupted (technical)"),
    "missed": N_("missed"),
    "cancelled": N_("cancelled"),
}

STAGES: dict[str, str] = {
    "screening": N_("screening"),
    "confirmatory": N_("confirmatory"),
    "test_to_zero": N_("retest to zero"),
}

EPISODE_STATES: dict[str, str] = {
    "due": N_("test due"),
    "deprivation": N_("waiting before the confirmatory test"),
    "confirmatory_due": N_("confirmatory test due"),
    "test_to_zero": N_("retesting until zero"),
    "negative": N_("negative"),
    "positive": N_("confirmed positive"),
    "missed": N_("test missed"),
    "unconfirmed": N_("positive screening not confirmed"),
}

ROLE_NAMES: dict[str, str] = {
    "admin": N_("administrator"),
    "officer": N_("officer"),
    "reviewer": N_("reviewer"),
    "auditor": N_("auditor"),
    "device": N_("device"),
    "person": N_("person"),
}

DEVICE_KINDS: dict[str, str] = {
    "av_station": N_("AV station"),
    "breathalyzer": N_("Breathalyzer"),
    "tracker": N_("Location tracker"),
}

MODALITIES: dict[str, str] = {"face": N_("face"), "voice": N_("voice")}

PROMPTS: dict[str, str] = {
    "turn_left": N_("Turn head left"),
    "turn_right": N_("Turn head right"),
    "blink": N_("Blink"),
    "read_digits": N_("Read digits aloud"),
}

VERDICT_PREFIXES: dict[str, str] = {
    "technical": N_("Technical"),
    "fail": N_("Failed"),
    "unsure": N_("Unsure"),
    "missing": N_("Missing"),
}

# Reasons per result code. `{name}` is filled from the result's details (and score / threshold).
REASONS: dict[str, str] = {
    # face
    "match": N_("Matches the enrolled person."),
    "borderline": N_("Face distance is between the match threshold and the mismatch limit."),
    "mismatch": N_("Does not match the enrolled person."),
    "frames_disagree": N_("Some frames do not match the enrolled person."),
    "too_few_good_frames": N_("Too few usable frames ({main_reason})."),
    "template_model_mismatch": N_("Enrolled with another model: the person must be re-enrolled."),
    "image_unusable": N_("The image could not be used."),
    "inconsistent_image": N_("The enrolment image does not match the others."),
    "inconsistent_images": N_("The enrolment images do not show one person."),
    "reenrol_mismatch": N_("The new enrolment does not match the old one."),
    "enrolled": N_("Enrolled."),
    "not_enrolled": N_("The person is not enrolled for this check."),
    "engine_failure": N_(
        "An analysis engine failed: the session goes to a reviewer and a retake is offered."
    ),
    "missed": N_("No test was taken in its window."),
    "bad_expected": N_("The digits asked for are not a valid digit string."),
    "digits_match": N_("The spoken digits match the ones asked for."),
    "digits_mismatch": N_("Other digits than the ones asked for were spoken."),
    "direction_unclear": N_("The head moved both ways before turning: the direction is unclear."),
    "missing_digits": N_("Some digits have too few enrolment recordings."),
    "photos_received": N_("The breath photos were received."),
    "unlike_templates": N_("The speech does not sound like the person's enrolled digits."),
    "not_judged": N_(
        "The server stopped before this session was judged; its evidence is kept and a retake is offered."
    ),
    "technical_failure": N_("The session ended in a technical failure; a retake is offered."),
    "link_not_delivered": N_("The check-in link never reached the person; a fresh link is sent."),
    "never_connected": N_("The check-in page was opened but never connected; a fresh link is sent."),
    "person_not_active": N_("This person is no longer under supervision; nothing was stored."),
    "engine_error": N_("An analysis engine failed."),
    "template_unreadable": N_("The enrolment template could not be read."),
    # face and photo quality
    "no_face": N_("No face found."),
    "several_faces": N_("Several faces in view."),
    "one_face": N_("Exactly one face in view."),
    "face_too_small": N_("Face too small."),
    "face_off_image": N_("Face is off the image."),
    "too_dark": N_("Too dark."),
    "too_bright": N_("Too bright."),
    "too_blurred": N_("Blurred."),
    "blurry": N_("Blurred."),
    "not_frontal": N_("Not facing the camera."),
    "quality_ok": N_("Quality is sufficient."),
    # anti-spoofing
    "live": N_("Looks like a live person."),
    "pad_live": N_("Looks like a live person."),
    "presentation_attack": N_("Looks like a photo, screen or mask."),
    "pad_attack_suspected": N_("Looks like a photo, screen or mask."),
    "pad_borderline": N_("Anti-spoofing could not decide."),
    "pad_uncertain": N_("Anti-spoofing could not decide."),
    "pad_mixed": N_("Anti-spoofing could not decide on these frames."),
    "pad_unavailable": N_("Anti-spoofing was not available."),
    "pad_engine_error": N_("The anti-spoofing engine failed."),
    "pad_models_unavailable": N_("The anti-spoofing models are not installed."),
    "pad_worker_not_initialised": N_("The anti-spoofing engine was not started."),
    "no_face_for_pad": N_("No face to check for spoofing."),
    # liveness challenge
    "head_turn": N_("Head turn seen."),
    "head_turn_borderline": N_("The head turn was too small to be sure."),
    "wrong_direction": N_("The head turned the other way ({opposite_deg}°)."),
    "no_head_turn": N_("No head turn followed the prompt."),
    "blink": N_("Blink seen."),
    "blink_borderline": N_("Could not tell whether the eyes blinked."),
    "eyes_not_reopened": N_("The eyes closed but were not seen to reopen."),
    "no_blink": N_("No blink followed the prompt."),
    "frame_rate_too_low": N_("Too few frames to see a blink ({fps} per second)."),
    "too_few_frames": N_("Too few frames showed a face."),
    "prompt_not_shown": N_("The prompt was not shown; could not tell."),
    # lips and speech
    "av_in_sync": N_("Lip movement matches the speech."),
    "av_out_of_sync": N_("Lip movement does not match the speech."),
    "av_borderline": N_("Could not tell whether the lips match the speech."),
    "no_mouth_movement": N_("Speech was heard but the mouth did not move."),
    "no_audio": N_("No audio was received."),
    "too_short": N_("Too little speech with a visible face."),
    "words_not_recognised": N_(
        "The spoken digits were not recognised by machine (no offline recogniser for Russian or Kazakh): "
        "listen to the recording. Lip-speech sync and the voice were checked instead."
    ),
    # voice
    "no_match": N_("Voice does not match the enrolment."),
    "uncalibrated": N_("The voice score is not calibrated."),
    "bad_template": N_("The voice enrolment could not be read."),
    "engine_mismatch": N_("The voice was enrolled with another engine."),
    "engine_unavailable": N_("The voice engine is not available."),
    "enrolment_incomplete": N_("The voice enrolment is incomplete."),
    "no_signal": N_("The microphone gave no signal."),
    "no_speech": N_("No speech was heard."),
    "clipped": N_("The recording is clipped (too loud)."),
    "too_noisy": N_("Too much background noise."),
    "too_little_speech": N_("Too little speech."),
    # location and media
    "location_recorded": N_("Location recorded with the session."),
    "location_missing": N_("No location was shared."),
    "no_video": N_("No video reached the server."),
    "client_hangup": N_("The session was closed before the end."),
    "connection_failed": N_("The connection failed."),
    "no_media_timeout": N_("No media arrived in time."),
    "max_duration": N_("The session ran too long and was stopped."),
    "server_shutdown": N_("The server restarted during the session."),
    # breath reading and station
    "below_limit": N_("Below the limit."),
    "returned_to_zero": N_("Back below the zero threshold."),
    "screening_positive": N_("Screening at or above the limit: a confirmatory test is required."),
    "confirmed_positive": N_("Confirmatory test at or above the limit."),
    "still_positive": N_("Still at or above the zero threshold."),
    "person_mismatch": N_("The station belongs to another person."),
    "valid": N_("Signature verified."),
    "signature_valid": N_("Signature verified."),
    "bad_signature": N_("The signature does not verify."),
    "not_canonical": N_("The reading is not in canonical form."),
    "unknown_device": N_("Unknown station."),
    "device_revoked": N_("The station is revoked."),
    "device_unassigned": N_("The station is not assigned to a person."),
    "replayed_nonce": N_("A reading was sent twice (replay)."),
    "weak_nonce": N_("The reading's nonce is too weak."),
    "fresh": N_("The reading is fresh."),
    "stale_reading": N_("The reading is too old."),
    "future_timestamp": N_("The reading is dated in the future."),
    "calibration_valid": N_("Calibration is valid."),
    "calibration_expired": N_("Calibration has expired."),
    "calibration_in_future": N_("The calibration date is in the future."),
    "reading_valid": N_("The reading is valid."),
    "invalid_reading": N_("The reading is invalid."),
    "reading_implausible": N_("The reading is implausible."),
    "blow_valid": N_("Blow timing is valid."),
    "blow_too_short": N_("The blow was too short."),
    "blow_too_long": N_("The blow was too long."),
    "blow_after_signing": N_("The blow ends after the reading was signed."),
    "photo_count_mismatch": N_("The number of photos does not match the reading."),
    "photos_in_blow": N_("Every photo was taken during the blow."),
    "photo_outside_blow": N_("A photo was taken outside the blow."),
    "too_few_photos": N_("Too few photos."),
    "too_many_photos": N_("Too many photos."),
    # breath photos
    "mouthpiece_visible": N_("Mouthpiece visible."),
    "mouthpiece_not_visible": N_("Mouthpiece not visible."),
    "mouthpiece_unknown": N_("Could not judge whether the mouthpiece is visible."),
    "mouthpiece_occludes": N_("The face under the mouthpiece could not be matched with confidence."),
    "identity_confirmed": N_("The person under the mouthpiece is the enrolled person."),
    "identity_unclear": N_("Could not confirm who is under the mouthpiece."),
    "different_person": N_("Another person is under the mouthpiece."),
    "uncertain_match": N_("Face match is uncertain with the mouthpiece covering the lower face."),
    "photo_check_failed": N_("The photo checks failed."),
    "photos_unreadable": N_("Some photos could not be read."),
    "photo_reused": N_("A photo identical to one from an earlier test was submitted."),
    "photo_near_duplicate": N_("A photo is a near-duplicate of one from an earlier test."),
    "identical_photos": N_("The same photo appears more than once in this test."),
    "photos_new": N_("No photo was seen before."),
}

# What a score measures and which way passes: "lower" (passes below the threshold), "higher" (at or above)
# or "above" (strictly above: a photo within the Hamming threshold of an earlier one counts as reused).
_UNITS: tuple[tuple[str, str, str], ...] = (
    ("hamming", N_("bits from the closest earlier photo"), "above"),
    ("distance", N_("distance"), "lower"),
    ("probability", N_("live probability"), "higher"),
    ("z-score", N_("voice similarity (z-score)"), "higher"),
    ("cosine", N_("similarity"), "higher"),
    ("degrees", N_("head turn, degrees"), "higher"),
    ("pearson", N_("lip-speech correlation"), "higher"),
    ("open-eye", N_("eye opening ratio"), "lower"),
    ("unlike skin", N_("mouthpiece coverage"), "higher"),
    ("utterances", N_("usable utterances"), "higher"),
)
_ALCOHOL_UNITS = ("g/210l", "mg/l", "g/100ml", "permille")
SCORE_WORD = N_("score")


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def score_sentence(
    t: Translator,
    outcome: str,
    score: float | None,
    threshold: float | None,
    details: Mapping[str, Any],
) -> str:
    """The score with its unit, threshold and direction in words: "distance 0.017, passes below 0.069"."""
    if score is None or not math.isfinite(score):
        return ""
    unit = str(details.get("score_unit") or "")
    low = unit.lower()
    noun, direction = t(SCORE_WORD), ""
    if low in _ALCOHOL_UNITS:
        noun, direction = t("BrAC, {unit}", unit=unit), "lower"
    else:
        for key, name, way in _UNITS:
            if key in low:
                noun, direction = t(name), way
                break
    if threshold is None:
        return f"{noun} {_number(score)}"
    if not direction:
        # No known unit: the outcome says which side of the threshold passed.
        passed = outcome == "pass"
        direction = "lower" if (score <= threshold) == passed else "higher"
    if direction == "above":
        text = t(
            "{noun} {score}, passes above {threshold}",
            noun=noun,
            score=_number(score),
            threshold=_number(threshold),
        )
    elif direction == "lower":
        text = t(
            "{noun} {score}, passes below {threshold}",
            noun=noun,
            score=_number(score),
            threshold=_number(threshold),
        )
    else:
        text = t(
            "{noun} {score}, passes at {threshold} or above",
            noun=noun,
            score=_number(score),
            threshold=_number(threshold),
        )
    fail_above = details.get("fail_above")
    if isinstance(fail_above, int | float) and direction == "lower":
        text += "; " + t("fails above {limit}", limit=_number(float(fail_above)))
    return text


def check_reason(t: Translator, code: str, message: str, details: Mapping[str, Any]) -> str:
    """The reason of a result in the reader's language, from its code and details."""
    source = REASONS.get(code)
    if source is None:
        return message
    params = {k: (_number(v) if isinstance(v, float) else v) for k, v in details.items()}
    if "main_reason" in params:
        params["main_reason"] = t(REASONS.get(str(params["main_reason"]), str(params["main_reason"])))
    return t(source, **params)


def check_name(t: Translator, kind: str) -> str:
    """The translated name of a check kind."""
    return t(CHECK_NAMES[kind]) if kind in CHECK_NAMES else kind


def word(t: Translator, vocabulary: Mapping[str, str], value: str | None) -> str:
    """A stored enum value in the reader's language (the value itself when the vocabulary lacks it)."""
    if value is None:
        return "—"
    return t(vocabulary[value]) if value in vocabulary else value


def verdict_reason(t: Translator, reason: str) -> str:
    """A stored verdict reason ("unsure: face: <English message>") with its prefix and check translated.

    Verdict reasons are stored as English text; the check rows below carry the translated explanation.
    """
    parts = reason.split(": ", 2)
    if len(parts) == 3 and parts[0] in VERDICT_PREFIXES:
        return f"{t(VERDICT_PREFIXES[parts[0]])}: {check_name(t, parts[1])} — {parts[2]}"
    return reason


# --- the check-in page ----------------------------------------------------------------------------------

# Keys are the ones checkin.js looks up; the English text is the source string.
CHECKIN: dict[str, str] = {
    "title": N_("Kuzet check-in"),
    "language": N_("Language"),
    "intro": N_(
        "A short video check is about to start. Hold the phone in front of your face in a well-lit place "
        "and follow the prompts on the screen."
    ),
    "need_camera": N_("Camera — to see your face"),
    "need_microphone": N_("Microphone — to record your voice"),
    "need_location": N_("Location — to record where you are"),
    "start": N_("Start"),
    "status.permissions": N_("Allow access to the camera and microphone…"),
    "status.connecting": N_("Connecting…"),
    "status.busy": N_("The server is busy. Retrying automatically — please keep this page open."),
    "status.live": N_("Check in progress. Follow the prompts."),
    "status.processing": N_("Check finished. Processing the result…"),
    "status.done": N_("Done. You can close this page."),
    "status.location_denied": N_("Location unavailable — continuing without it."),
    "error.camera": N_(
        "No access to the camera or microphone. Allow it in the browser settings and reload the page."
    ),
    "error.link": N_(
        "This link is not valid: it has expired or was already used. Ask your officer for a new one."
    ),
    "error.network": N_("Could not connect. Check your internet connection and try again."),
    "error.unsupported": N_("This browser does not support video calls. Open the link in Chrome or Safari."),
    "prompt.look_straight": N_("Look straight into the camera"),
    "prompt.turn_left": N_("Slowly turn your head to the left"),
    "prompt.turn_right": N_("Slowly turn your head to the right"),
    "prompt.blink": N_("Blink twice"),
    "prompt.read_digits": N_("Say these digits out loud:"),
    "prompt.done": N_("Thank you!"),
    "feedback.ok": N_("Good"),
    "feedback.too_dark": N_("Too dark — find a brighter place"),
    "feedback.too_bright": N_("Too bright — turn away from the light"),
    "feedback.face_not_visible": N_("Face not visible — hold the phone in front of you"),
    "feedback.several_faces": N_("Several faces in view — please be alone"),
    "outcome.pass": N_("Check-in accepted."),
    "outcome.fail": N_("Check-in not accepted. Your officer will be notified."),
    "outcome.review": N_("Check-in sent to your officer for review."),
    "outcome.retake": N_(
        "The check could not be completed because of a technical fault. This is not a violation. A new link will be sent to you."
    ),
    "outcome.error": N_(
        "Technical error on the server. This is not a violation. Your officer has been notified and will send you a new link."
    ),
    "link.title": N_("This link cannot be used"),
    "link.unknown": N_(
        "This check-in link was not found. Make sure you opened the whole link from the message."
    ),
    "link.used": N_("This link was already used: each link opens only one check-in."),
    "link.expired": N_("This link has expired."),
    "link.not_yet": N_("This check-in has not started yet. Open the link at the scheduled time."),
    "link.closed": N_("This check-in is already closed."),
    "link.what_to_do": N_(
        "Nothing was recorded and no camera access is needed. Contact your officer for a new link."
    ),
    "call.title": N_("Call with your officer"),
    "call.intro": N_(
        "Your officer is calling you by video. You will see and hear each other; the call is recorded. "
        "Hold the phone in front of your face in a well-lit place."
    ),
    "call.live": N_("Call in progress."),
    "call.ended": N_("The call has ended. You can close this page."),
}


@lru_cache(maxsize=1)
def checkin_strings() -> dict[str, dict[str, str]]:
    """The check-in page's strings per language, keyed as checkin.js expects (one table for server and JS)."""
    return {lang: {key: translator(lang)(text) for key, text in CHECKIN.items()} for lang in LANGS}
