"""The reconciler's section of docs/benchmarks.md: figures rendered from the bench's JSON, judged against the
issue's targets, and kept when `make bench` rewrites the rest of the file."""

from typing import Any

from harness.bench import reconciler_report
from harness.bench.reconciler_report import END, START, kept_section, section, splice


def figures(p99: float) -> dict[str, Any]:
    run = {"events_per_s": 3000, "steady_events_per_s": 3100}
    return {
        "machine": {"cores": 2},
        "orders": 20000,
        "load_average_at_start": [0.3, 0.2, 0.1],
        "load_average_at_end": [1.4, 0.9, 0.5],
        "engine": {"events_per_s": 60000},
        "catch_up": {
            "events": 61000,
            "orders": 20000,
            "workers": 2,
            "median_events_per_s": {
                "faust_ceiling": 4000,
                "reconciler": 3000,
                "reconciler_workers": 5000,
                "bytewax": 40000,
            },
            "median_steady_events_per_s": {
                "faust_ceiling": 4200,
                "reconciler": 3100,
                "reconciler_workers": 5200,
                "bytewax": 41000,
            },
            "runs": {"reconciler": [run], "reconciler_workers": [run], "faust_ceiling": [run], "bytewax": [run]},
        },
        "live": {
            "orders": 20000,
            "events": 60000,
            "rate_per_s": 2000.0,
            "published_in_s": 10.1,
            "workers": 2,
            "threshold_s": 5.0,
            "load_average": 0.8,
            "caught_up_s_after_the_last_deadline": 0.4,
            "reconciler": {
                "flagged": 1000,
                "dropped": 1000,
                "precision": 1.0,
                "recall": 1.0,
                "detection_p50_s": 0.3,
                "detection_p99_s": p99,
            },
            "false_flags": 0,
            "credits_late_on_the_broker": 0,
        },
    }


def test_the_section_gives_the_reconciler_as_a_share_of_fausts_ceiling_and_judges_live_detection() -> None:
    within = section(figures(0.9), None, "today")
    assert within.startswith(START) and within.rstrip().endswith(END)
    assert "| reconciler, 1 worker process | 3,000 | 0.75 |" in within
    assert "| reconciler, 2 worker processes | 5,000 | 1.25 |" in within
    assert "one worker 3,000 of 10,000 events/s (0.3)" in within
    assert "Detection p99 0.9 s after the deadline: within the 1 s target" in within
    late = section(figures(1.2), None, "today")
    assert "Detection p99 1.2 s after the deadline: NOT within the 1 s target" in late


def test_the_table_size_report_becomes_a_row_per_variant() -> None:
    sizes = {
        "orders": 1_000_000,
        "retention_s": 604800.0,
        "variants": [
            {"variant": "before", "changelog_mib": 400.0, "first": {"taken_over_s": 90.5, "rss_mib": 2100.0}},
            {
                "variant": "after, expired",
                "changelog_mib": 300.0,
                "first": {"taken_over_s": 60.0, "rss_mib": 900.0},
                "next": {"taken_over_s": 30.0, "rss_mib": 150.0},
            },
        ],
    }
    text = section(figures(0.5), sizes, "today")
    assert "### A table of 1,000,000 settled orders" in text
    assert "| before | 400 | n/a | 90.5 | 2,100 | n/a | n/a |  |" in text
    assert "| after, expired | 300 | n/a | 60 | 900 | 30 | 150 |  |" in text


def test_a_rewrite_of_the_rest_of_the_report_keeps_the_reconciler_section() -> None:
    old = "# Benchmarks\n\nold pipeline figures\n\n" + section(figures(0.5), None, "yesterday")
    rewritten = "# Benchmarks\n\nnew pipeline figures\n"
    kept = kept_section(old)
    assert kept is not None
    result = splice(rewritten, kept)
    assert "new pipeline figures" in result and "old pipeline figures" not in result
    assert result.count(START) == 1 and "Written by `credited bench-reconciler` on yesterday" in result


def test_a_new_reconciler_section_replaces_the_old_one_and_nothing_else(tmp_path: Any) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\npipeline\n\n" + section(figures(0.5), None, "yesterday") + "\ntail\n")
    reconciler_report.write(path, figures(0.7), None, "today")
    text = path.read_text()
    assert text.count(START) == 1 and "yesterday" not in text and "on today" in text
    assert text.startswith("# Benchmarks\n\npipeline\n") and text.rstrip().endswith("tail")
