"""Workstation strings in Russian and English (the check-in page has its own ru/kk/en table)."""

from __future__ import annotations

LANGS = ("ru", "en")

STRINGS: dict[str, dict[str, str]] = {
    "title": {"ru": "Кузет — рабочее место проверяющего", "en": "Kuzet — reviewer workstation"},
    "login": {"ru": "Войти", "en": "Log in"},
    "logout": {"ru": "Выйти", "en": "Log out"},
    "username": {"ru": "Имя пользователя", "en": "Username"},
    "password": {"ru": "Пароль", "en": "Password"},
    "queue": {"ru": "Очередь на проверку", "en": "Review queue"},
    "queue_empty": {"ru": "Нет сеансов, требующих решения.", "en": "Nothing is waiting for a decision."},
    "session": {"ru": "Сеанс", "en": "Session"},
    "person": {"ru": "Поднадзорный", "en": "Person"},
    "kind": {"ru": "Вид", "en": "Kind"},
    "status": {"ru": "Статус", "en": "Status"},
    "verdict": {"ru": "Автоматическое решение", "en": "Automatic verdict"},
    "reasons": {"ru": "Причины", "en": "Reasons"},
    "checks": {"ru": "Проверки", "en": "Checks"},
    "check": {"ru": "Проверка", "en": "Check"},
    "outcome": {"ru": "Результат", "en": "Outcome"},
    "score": {"ru": "Оценка", "en": "Score"},
    "threshold": {"ru": "Порог", "en": "Threshold"},
    "model": {"ru": "Модель", "en": "Model"},
    "message": {"ru": "Пояснение", "en": "Explanation"},
    "recording": {"ru": "Запись сеанса", "en": "Session recording"},
    "frames": {"ru": "Кадры", "en": "Sampled frames"},
    "audio": {"ru": "Речь", "en": "Speech"},
    "photos": {"ru": "Фото при продувке", "en": "Breath photos"},
    "reading": {"ru": "Показание алкотестера", "en": "Breathalyzer reading"},
    "location": {"ru": "Местоположение", "en": "Location"},
    "none": {"ru": "нет", "en": "none"},
    "decide": {"ru": "Решение", "en": "Decision"},
    "comment": {"ru": "Комментарий (обязательно)", "en": "Comment (required)"},
    "submit": {"ru": "Сохранить решение", "en": "Record decision"},
    "pass": {"ru": "Пройдено", "en": "Pass"},
    "fail": {"ru": "Нарушение", "en": "Violation"},
    "review": {"ru": "Требует проверки", "en": "Needs review"},
    "reviews": {"ru": "Решения проверяющих", "en": "Reviewer decisions"},
    "export": {"ru": "Скачать пакет доказательств", "en": "Download evidence package"},
    "window": {"ru": "Окно", "en": "Window"},
    "open": {"ru": "Открыть", "en": "Open"},
    "decided": {"ru": "Решение записано", "en": "Decision recorded"},
}


def table(lang: str) -> dict[str, str]:
    """All strings in `lang` (Russian when the language is unknown)."""
    code = lang if lang in LANGS else "ru"
    return {key: values[code] for key, values in STRINGS.items()}
