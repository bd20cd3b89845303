"""The gettext catalogs cover every workstation, check-in and check-result string in Russian and Kazakh.

Fails on a msgid missing (or empty, or fuzzy) in the ru or kk catalog, on template text not wrapped in
`_()`, on a check code the engines can emit without a translated reason, and on an enum value without a
translated word.
"""

from __future__ import annotations

import ast
import re
from enum import Enum
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from identity.checks import CheckKind, Outcome
from media_server import i18n
from media_server.db.enums import Decision, DeviceKind, Role, SessionKind, SessionStatus
from media_server.webrtc.capture import EndedReason
from sobriety.policy import RetestState, TestStage

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "media_server" / "templates"
KEYWORDS = {"_": None, "N_": None, "t": None}
PLACEHOLDER = re.compile(r"\{(\w+)\}")
# A module that marks or translates strings: it must be one of the babel.cfg sources.
MARKS = re.compile(r"\bN_\(|\btranslator\(")
# Text that is the same in every language (the product name, language codes, units symbols).
UNTRANSLATED = {"Kuzet", "sha256", "±", "—", "·", "…", "(", ")", ":", ";", ",", "|"}


def _catalog(lang: str) -> dict[str, tuple[str, bool]]:
    with (i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "kuzet.po").open("rb") as f:
        return {str(m.id): (str(m.string), m.fuzzy) for m in read_po(f) if m.id}


def _extracted() -> list[tuple[str, str]]:
    """(file, msgid) of every string the babel.cfg sources mark, extracted the way pybabel does."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)  # type: ignore[no-untyped-call]  # Babel is untyped here
    found = extract_from_dir(str(ROOT), method_map, options_map, keywords=KEYWORDS)
    return [(name, message) for name, _, message, _, _ in found if isinstance(message, str)]


def _source_msgids() -> set[str]:
    return {message for _, message in _extracted()}


def test_babel_cfg_covers_every_module_that_marks_strings() -> None:
    extracted = {name for name, _ in _extracted()}
    marking = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "media_server").rglob("*.py")
        if MARKS.search(path.read_text("utf-8"))
    }
    assert {"media_server/i18n.py", "media_server/api/workstation.py"} <= marking
    assert marking - extracted == set(), "add these modules to babel.cfg"


def test_extraction_finds_the_known_strings() -> None:
    ids = _source_msgids()
    assert len(ids) > 300
    assert {"Review queue", "Face match", "The head turned the other way ({opposite_deg}°)."} <= ids


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_every_msgid_is_translated(lang: str) -> None:
    catalog = _catalog(lang)
    problems = []
    for msgid in sorted(_source_msgids()):
        string, fuzzy = catalog.get(msgid, ("", False))
        if not string or fuzzy:
            problems.append(f"missing: {msgid!r}")
        elif set(PLACEHOLDER.findall(string)) != set(PLACEHOLDER.findall(msgid)):
            problems.append(f"placeholders differ: {msgid!r} -> {string!r}")
    assert problems == [], "\n".join(problems)


def test_catalogs_have_no_stale_entries() -> None:
    ids = _source_msgids()
    for lang in i18n.LANGS:
        assert set(_catalog(lang)) == ids, lang


def test_translations_load_and_differ_from_english() -> None:
    for lang, expected in (("ru", "Очередь на проверку"), ("kk", "Тексеру кезегі"), ("en", "Review queue")):
        assert i18n.translator(lang)("Review queue") == expected
    assert i18n.translator("xx").lang == "ru"
    t = i18n.translator("ru")
    assert t("Page {page} of {pages}", page=2, pages=5) == "Страница 2 из 5"
    assert t("Page {page} of {pages}") == "Страница {page} из {pages}"


def _template_text(source: str) -> list[str]:
    """Literal text of a template outside Jinja tags and HTML markup (what a reader would see as is)."""
    text = re.sub(r"\{#.*?#\}", " ", source, flags=re.S)
    text = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", " ", text, flags=re.S)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S)
    attrs = re.findall(r'\b(?:title|alt|placeholder|aria-label)="([^"]*)"', text)
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"&\w+;", " ", text)
    words = [w for w in text.split() + " ".join(attrs).split() if re.search(r"[^\W\d_]", w)]
    return [w for w in words if w not in UNTRANSLATED]


def test_no_template_text_is_left_unwrapped() -> None:
    unwrapped = {}
    for path in sorted(TEMPLATES.glob("*.html")):
        words = _template_text(path.read_text("utf-8"))
        if words:
            unwrapped[path.name] = words
    assert unwrapped == {}


def test_the_unwrapped_text_check_catches_literal_text() -> None:
    assert _template_text('<p>{{ _("ok") }} Hello <b>{{ x }}</b></p><img alt="photo">') == ["Hello", "photo"]


def _emitted_codes() -> set[str]:
    """Codes the engines and flows can put on a CheckResult: the string after an `Outcome.X` argument."""
    codes: set[str] = set()
    snake = re.compile(r"^[a-z][a-z0-9_]*$")
    for package in ("identity", "sobriety", "media_server"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if (
                        kw.arg == "code"
                        and isinstance(kw.value, ast.Constant)
                        and isinstance(kw.value.value, str)
                    ):
                        codes.add(kw.value.value)
                for i, arg in enumerate(node.args[:-1]):
                    is_outcome = isinstance(arg, ast.Attribute) and getattr(arg.value, "id", "") == "Outcome"
                    following = node.args[i + 1]
                    if (
                        is_outcome
                        and isinstance(following, ast.Constant)
                        and isinstance(following.value, str)
                    ):
                        codes.add(following.value)
    return {c for c in codes if snake.match(c)}


def test_every_check_code_has_a_translated_reason() -> None:
    codes = _emitted_codes() | {r.value for r in EndedReason if r is not EndedReason.COMPLETED}
    assert len(codes) > 90
    missing = sorted(c for c in codes if c not in i18n.REASONS)
    assert missing == []


@pytest.mark.parametrize(
    ("enum", "vocabulary"),
    [
        (CheckKind, i18n.CHECK_NAMES),
        (Outcome, i18n.OUTCOME_WORDS),
        (Decision, i18n.DECISION_WORDS),
        (SessionKind, i18n.SESSION_KINDS),
        (SessionStatus, i18n.SESSION_STATUSES),
        (TestStage, i18n.STAGES),
        (RetestState, i18n.EPISODE_STATES),
        (Role, i18n.ROLE_NAMES),
        (DeviceKind, i18n.DEVICE_KINDS),
    ],
)
def test_every_stored_value_has_a_word(enum: type[Enum], vocabulary: dict[str, str]) -> None:
    assert {m.value for m in enum} == set(vocabulary)


def test_reason_rendering_uses_the_code_and_its_details() -> None:
    ru, kk = i18n.translator("ru"), i18n.translator("kk")
    details = {"opposite_deg": 17.8}
    assert i18n.check_reason(ru, "wrong_direction", "The head turned the other way.", details) == (
        "Голова повернулась в другую сторону (17.80°)."
    )
    assert "17.80" in i18n.check_reason(kk, "wrong_direction", "x", details)
    # an unknown code keeps the engine's own message
    assert i18n.check_reason(ru, "brand_new_code", "Engine text.", {}) == "Engine text."


def test_scores_carry_unit_threshold_and_direction() -> None:
    en = i18n.translator("en")
    face = i18n.score_sentence(
        en, "pass", 0.0172, 0.0688, {"score_unit": "cosine_distance", "fail_above": 0.52}
    )
    assert face == "distance 0.017, passes below 0.069; fails above 0.520"
    pad = i18n.score_sentence(
        en, "pass", 0.9998, 0.55, {"score_unit": "fused MiniFASNet live probability (0..1)"}
    )
    assert pad == "live probability 1.000, passes at 0.550 or above"
    turn = i18n.score_sentence(en, "fail", -2.22, 15.0, {"score_unit": "degrees"})
    assert turn == "head turn, degrees -2.22, passes at 15 or above"
    brac = i18n.score_sentence(en, "fail", 0.041, 0.02, {"score_unit": "g/210L"})
    assert brac == "BrAC, g/210L 0.041, passes below 0.020"
    # no unit: the outcome tells the direction
    assert i18n.score_sentence(en, "pass", 120.0, 80.0, {}) == "score 120, passes at 80 or above"
    ru = i18n.translator("ru")
    assert i18n.score_sentence(ru, "pass", 0.0172, 0.0688, {"score_unit": "cosine_distance"}) == (
        "расстояние 0.017, проходит ниже 0.069"
    )


def test_checkin_strings_come_from_the_catalogs() -> None:
    strings = i18n.checkin_strings()
    assert set(strings) == {"ru", "kk", "en"}
    for lang in strings:
        assert set(strings[lang]) == set(i18n.CHECKIN) and all(strings[lang].values())
    assert strings["en"]["start"] == "Start" and strings["ru"]["start"] == "Начать"
    assert strings["kk"]["start"] == "Бастау"
    assert all(strings["kk"][k] != strings["en"][k] for k in i18n.CHECKIN)
