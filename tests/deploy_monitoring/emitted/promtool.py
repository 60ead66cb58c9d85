"""promtool unit tests whose input is what the services emitted: each test case of the templates in
tests/deploy_monitoring/rules/ names a scenario instead of listing input series, and gets the scenario's
scrapes (every series of every target, one value per step) as its `input_series`."""

from pathlib import Path
from typing import Any

import yaml

from tests.deploy_monitoring.emitted.scenarios import SCENARIOS, timeline
from tests.deploy_monitoring.emitted.scrape import selector_text, values_text


def case_with_input(case: dict[str, Any]) -> dict[str, Any]:
    """The test case with `scenario: <name>` replaced by the scenario's interval and input series."""
    if "input_series" in case:
        raise ValueError(f"{case['name']!r} writes its input series by hand: name a scenario instead")
    name = case["scenario"]
    played = timeline(name)
    series = [
        {"series": selector_text(labels), "values": values_text(history)}
        for labels, history in sorted(played.values.items())
    ]
    rest = {k: v for k, v in case.items() if k != "scenario"}
    return {"name": rest.pop("name"), "interval": f"{SCENARIOS[name].interval_s}s", "input_series": series, **rest}


def write_rule_tests(templates: list[Path], out: Path) -> list[Path]:
    """Each template as a promtool test file in `out`, its rule files made absolute."""
    written = []
    for template in templates:
        doc = yaml.safe_load(template.read_text())
        doc["rule_files"] = [str((template.parent / path).resolve()) for path in doc["rule_files"]]
        doc["tests"] = [case_with_input(case) for case in doc["tests"]]
        target = out / template.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False, width=10_000))
        written.append(target)
    return written
