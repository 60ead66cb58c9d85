"""The console's language choice and its money, time and age formats, in English and Simplified Chinese."""

from babel.numbers import format_decimal

from credited.console.i18n import Words, choose_locale
from credited.console.wording import WORDS


def test_every_word_the_console_says_in_english_it_also_says_in_chinese() -> None:
    assert set(WORDS["en"]) == set(WORDS["zh-CN"])
    assert all(text.strip() for words in WORDS.values() for text in words.values())


def test_the_chosen_language_wins_over_the_browsers() -> None:
    assert choose_locale("zh-CN", "en-US,en;q=0.9") == "zh-CN"
    assert choose_locale("en", "zh-CN,zh;q=0.9") == "en"


def test_the_browsers_first_language_the_console_speaks_is_used_by_weight() -> None:
    assert choose_locale(None, "fr-FR,zh-TW;q=0.8,en;q=0.5") == "zh-CN"
    assert choose_locale(None, "en;q=0.4,zh;q=0.9") == "zh-CN"
    assert choose_locale(None, "zh;q=0,en;q=0.1") == "en"


def test_a_language_the_console_does_not_speak_or_garbage_falls_back_to_english() -> None:
    assert choose_locale("xx-!!", "de-DE,fr;q=0.5") == "en"
    assert choose_locale(None, None) == "en"
    assert choose_locale(None, ";;q=abc,") == "en"


def test_money_in_minor_units_is_written_with_the_currencys_own_digits() -> None:
    assert Words("en").money(64800, "CNY") == "CN¥648.00"
    assert Words("zh-CN").money(64800, "CNY") == "¥648.00"
    assert Words("en").money(500, "JPY") == f"¥{format_decimal(500, locale='en')}"


def test_times_are_written_in_utc_and_say_so_in_each_language() -> None:
    moment = "2026-11-22T16:05:09+08:00"
    assert Words("en").time(moment) == "Nov 22, 2026, 8:05:09\u202fAM UTC"
    assert Words("zh-CN").time(moment) == "2026年11月22日 08:05:09（UTC）"  # noqa: RUF001
    assert Words("en").time(None) == ""
    assert Words("en").time("not a time") == "not a time"


def test_case_kinds_and_sources_are_translated_and_unknown_values_shown_as_given() -> None:
    zh = Words("zh-CN")
    assert zh.coded("kind", "needs_support") == "需要客服处理"
    assert zh.coded("source", "ledger") == "账本"
    assert zh.coded("kind", "something_new") == "something_new"
    assert Words("en").age(7200) == "2 hours"
    assert zh.age(7200) == "2小时"
