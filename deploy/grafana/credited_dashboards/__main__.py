"""Write every dashboard as JSON into deploy/grafana/dashboards/ (`--check`: fail if any differs)."""

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from credited_dashboards.orders import channels, overview, reconciler
from credited_dashboards.platform import kafka_and_outbox, notifier
from credited_dashboards.runbooks import runbooks

OUT = Path(__file__).resolve().parents[1] / "dashboards"
ALL = (overview, reconciler, channels, notifier, kafka_and_outbox, *runbooks())


def rendered() -> dict[str, str]:
    """File name -> JSON text of each dashboard, as committed."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    files = {}
    for build in ALL:
        board = build().build()
        files[f"{board.uid}.json"] = encoder.encode(board) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare with the committed JSON")
    args = parser.parse_args()
    files = rendered()
    stale = sorted(
        name for name, text in files.items() if not (OUT / name).exists() or (OUT / name).read_text() != text
    )
    extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
    if args.check:
        for name in stale + extra:
            sys.stderr.write(f"deploy/grafana/dashboards/{name} differs from the code: run `make dashboards`\n")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for name in stale:
        (OUT / name).write_text(files[name])
    for name in extra:
        (OUT / name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
