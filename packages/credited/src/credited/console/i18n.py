"""The console's language and how it writes money, times and ages (Babel's CLDR data). Pure.

The language is the one the person chose (the switch, kept in a cookie), else the first of their browser's
Accept-Language that the console speaks, else English. Money arrives in integer minor units; how many digits a
currency has is Babel's (CNY two, JPY none). Times are shown in UTC, said so: staff compare them with logs.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime, format_timedelta

from credited.console.wording import WORDS

DEFAULT_LOCALE = "en"
LOCALES = ("en", "zh-CN")
LANGUAGE_NAMES = {"en": "English", "zh-CN": "简体中文"}


def supported(tag: str | None) -> str | None:
    """The console language a BCP 47 tag asks for (any Chinese is zh-CN, any English en), or None."""
    if not tag:
        return None
    try:
        parsed = Locale.parse(tag.strip().replace("_", "-"), sep="-")
    except (ValueError, TypeError, UnknownLocaleError):
        return None
    return {"zh": "zh-CN", "en": "en"}.get(parsed.language)


def _accepted(header: str) -> list[str]:
    """Accept-Language's tags, most wanted first (RFC 9110 weights; a tag with q=0 is refused)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def choose_locale(chosen: str | None, accept_language: str | None) -> str:
    """The person's choice when the console speaks it, else their browser's first it speaks, else English."""
    for tag in (chosen, *_accepted(accept_language or "")):
        language = supported(tag)
        if language is not None:
            return language
    return DEFAULT_LOCALE


@dataclass(frozen=True, slots=True)
class Words:
    """The console's words and formats in one language."""

    locale: str

    def __call__(self, key: str, **values: object) -> str:
        text = WORDS[self.locale].get(key) or WORDS[DEFAULT_LOCALE].get(key) or key
        return text.format(**values) if values else text

    def coded(self, prefix: str, value: str | None) -> str:
        """A value the API names (a case kind, severity, source) in this language, or as given when unknown."""
        if value is None:
            return ""
        return WORDS[self.locale].get(f"{prefix}_{value}", value)

    def money(self, amount: int | None, currency: str | None) -> str:
        """`64800, "CNY"` as "CN¥648.00" in English and "¥648.00" in zh-CN; `500, "JPY"` as "¥500"."""
        if amount is None or not currency:
            return ""
        from servicekit.money import format_minor

        try:
            return format_minor(amount, currency, self._babel())
        except (ValueError, UnknownLocaleError):
            return f"{amount} {currency} (minor units)"

    def time(self, moment: str | datetime | None) -> str:
        """An ISO 8601 time from the API as the language writes it, to the second, in UTC."""
        if moment is None or moment == "":
            return ""
        try:
            when = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
        except ValueError:
            return str(moment)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        text = format_datetime(when.astimezone(UTC), "medium", tzinfo=UTC, locale=self._babel())
        return self("in_utc", time=text)

    def age(self, seconds: float | None) -> str:
        """How long ago, roughly ("3 hours", "3小时")."""
        if seconds is None:
            return ""
        return format_timedelta(timedelta(seconds=seconds), threshold=1.5, locale=self._babel())

    def _babel(self) -> Locale:
        return Locale.parse(self.locale, sep="-")
