"""The languages the notifier writes, and money and times formatted for the user (Babel's CLDR data). Pure.

Money arrives in minor units; how many digits a currency has is Babel's, not ours: JPY and KRW have none,
CNY two, BHD three. Times are shown in the user's IANA time zone when they told us one, else in UTC, said so.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton, get_datetime_format
from babel.dates import format_time as format_clock

from notifier.domain.wording import IN_OFFSET, IN_UTC
from servicekit.money import format_minor

DEFAULT_LOCALE = "en"
LOCALES = ("en", "zh-CN", "zh-TW", "zh-HK")
"""Simplified Chinese for the mainland, Traditional with Taiwan's wording, Traditional with Hong Kong's."""


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the user chose: a BCP 47 locale (`zh-TW`) and an IANA time zone (`Asia/Taipei`); either may be unset."""

    locale: str | None = None
    time_zone: str | None = None


@lru_cache(maxsize=512)
def _parse(tag: str) -> Locale | None:
    """The Babel locale of a BCP 47 tag, or of its longest prefix Babel knows (RFC 4647 lookup: subtags dropped from
    the end), so an unknown region or an extension keeps the script and region before it: zh-Hant-US is zh-Hant,
    zh-HK-u-ca-chinese zh-HK, zh-XX zh."""
    subtags = tag.replace("_", "-").split("-")
    script = subtags[1].title() if len(subtags) > 1 and len(subtags[1]) == 4 else None
    for end in range(len(subtags), 0, -1):
        try:
            parsed = Locale.parse("-".join(subtags[:end]), sep="-")
        except (ValueError, TypeError, UnknownLocaleError):
            continue
        if script is None or parsed.script in (None, script):  # Babel reads zh-Hant-SG as zh_Hans_SG
            return parsed
    return None


def resolve_locale(locale: str | None) -> str:
    """The supported language to write in: zh-TW and zh-HK (and zh-Hant, zh-MO) in Traditional Chinese,
    other Chinese in Simplified, everything else in English."""
    parsed = _parse(locale) if locale else None
    if parsed is None or parsed.language != "zh":
        return DEFAULT_LOCALE
    # Babel fills in the script: zh-TW is zh_Hant_TW, zh-SG is zh_Hans_SG, plain zh is Simplified.
    if parsed.script == "Hant" or (parsed.script is None and parsed.territory in ("TW", "HK", "MO")):
        return "zh-HK" if parsed.territory in ("HK", "MO") else "zh-TW"
    return "zh-CN"


def _formatting_locale(asked: str | None, written: str) -> Locale:
    """Numbers and dates follow the user's own locale (en-GB writes 22 Nov) when it is in the language we
    write; otherwise the written language's, so the sentence and its numbers agree."""
    fallback = _parse(written)
    assert fallback is not None
    parsed = _parse(asked) if asked else None
    # Every other language resolves to English too: ja-JP's money (元648.00) and dates would sit in an English sentence.
    if parsed is not None and parsed.language == fallback.language and resolve_locale(asked) == written:
        return parsed
    return fallback


@lru_cache(maxsize=4096)  # top-ups come in a few prices per currency; Babel takes ~15 µs to format one
def format_money(amount: int, currency: str, locale: str | None = None) -> str:
    """`64800, "CNY"` as "CN¥648.00" in English and "¥648.00" in zh-CN; `64800, "JPY"` as "¥64,800" (by the ISO 4217
    exponent, servicekit.money)."""
    written = resolve_locale(locale)
    return format_minor(amount, currency, _formatting_locale(locale, written))


def valid_time_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine knows (a directory of the zone database, such as
    "America", is none: ZoneInfo raises IsADirectoryError for it)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def format_time(
    moment: datetime, locale: str | None = None, time_zone: str | None = None, *, labelled: bool = False
) -> str:
    """Date and time to the minute in the user's zone ("Nov 22, 2026, 4:05 PM"); in UTC, labelled, when the
    zone is unknown ("Nov 22, 2026, 8:05 AM UTC"). `labelled`: the zone is not one the user chose (their browser's),
    so the time says which it is, by its offset ("Nov 22, 2026, 4:05 PM UTC+8"; "... UTC" at no offset)."""
    return _format_minute(moment.astimezone(UTC).replace(second=0, microsecond=0), locale, time_zone, labelled)


@lru_cache(maxsize=4096)  # overdue orders share their expected minute; Babel takes ~30 µs for one
def _format_minute(moment: datetime, locale: str | None, time_zone: str | None, labelled: bool) -> str:
    written = resolve_locale(locale)
    where = _formatting_locale(locale, written)
    zone = ZoneInfo(time_zone) if time_zone and valid_time_zone(time_zone) else None
    local = moment.astimezone(zone or UTC)
    date = format_skeleton("yMMMd", local, tzinfo=local.tzinfo, locale=where)
    clock = format_clock(local, "short", tzinfo=local.tzinfo, locale=where)
    text = str(get_datetime_format("medium", locale=where)).replace("{1}", date).replace("{0}", clock)
    offset = local.utcoffset()
    if zone is None or (labelled and not offset):
        return IN_UTC[written].format(time=text)
    if labelled and offset:
        minutes = round(offset.total_seconds()) // 60
        hours, rest = divmod(abs(minutes), 60)
        sign = "+" if minutes > 0 else "-"
        return IN_OFFSET[written].format(time=text, offset=f"{sign}{hours}" + (f":{rest:02d}" if rest else ""))
    return text
