"""Start-up's objects left out of the garbage collector's full collections (servicekit.runner.freeze_startup).

Each case runs in a process of its own: a freeze lasts for the whole process, and pytest's must stay as it is."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import gc, json
from servicekit.runner import freeze_startup

made_at_start_up = {"routes": [1, 2, 3]}
gc.collect()
before = gc.get_freeze_count()
frozen = freeze_startup()
made_later = {"orders": [4, 5, 6]}
print(json.dumps({
    "before": before,
    "frozen": frozen,
    "freeze_count": gc.get_freeze_count(),
    "start_up_collected": any(o is made_at_start_up for o in gc.get_objects()),
    "later_collected": any(o is made_later for o in gc.get_objects()),
}))
"""


def probe(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_objects_alive_at_start_up_are_frozen_and_what_comes_later_is_still_collected() -> None:
    result = probe()
    assert result["before"] == 0
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000  # the imported modules, at least
    assert result["frozen"] == result["freeze_count"]
    assert result["start_up_collected"] is False
    assert result["later_collected"] is True


def test_credited_gc_freeze_0_leaves_start_up_to_the_collector() -> None:
    result = probe(CREDITED_GC_FREEZE="0")
    assert result == {
        "before": 0,
        "frozen": 0,
        "freeze_count": 0,
        "start_up_collected": True,
        "later_collected": True,
    }
