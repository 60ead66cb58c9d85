"""The zone a status page's browser says it is in is used only if the zone database knows it: anything else is UTC."""

from notifier.adapters.status_page import browser_zone


def test_a_browsers_zone_is_kept_only_when_the_zone_database_knows_it() -> None:
    assert browser_zone("Asia/Shanghai") == "Asia/Shanghai"
    assert browser_zone("America/Argentina/Buenos_Aires") == "America/Argentina/Buenos_Aires"
    assert browser_zone("Etc/GMT+5") == "Etc/GMT+5"
    for odd in (None, "", "Mars/Olympus", "America", "../../../etc/passwd", "/etc/localtime", "Asia/Shanghai\n"):
        assert browser_zone(odd) is None, odd
    assert browser_zone("A" * 65) is None
