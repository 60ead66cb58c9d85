"""`python -m credited.providers`: the local payment provider on its own, printing the PAYMENTS_*
settings that make payments its merchant (test keys made now, valid while it runs)."""

import argparse
import asyncio
import contextlib
import json
import logging
from pathlib import Path

from credited.providers.faults import Faults
from credited.providers.notifier import NotifyKnobs
from credited.providers.server import LocalProvider


async def _run(args: argparse.Namespace) -> None:
    knobs = NotifyKnobs(args.drop, args.duplicate, args.max_delay, tuple(args.retry), args.seed)
    provider = LocalProvider(
        args.port,
        knobs=knobs,
        faults=Faults(args.failure_share, args.timeout_share, seed=args.seed),
        notify_urls={
            "wechatpay": f"{args.payments}/v1/psp/wechatpay/callbacks",
            "alipay": f"{args.payments}/v1/psp/alipay/callbacks",
        },
    )
    await provider.start()
    settings = provider.keys.payments_env(provider.url)
    if args.env_file is None:
        print(json.dumps(settings, indent=2), flush=True)  # noqa: T201
    else:  # for the local stack, which starts payments with them: written whole, readable by its owner only
        written = args.env_file.with_name(args.env_file.name + ".part")
        written.unlink(missing_ok=True)
        written.touch(mode=0o600)
        written.write_text(json.dumps(settings))
        written.replace(args.env_file)
    try:
        await asyncio.Event().wait()
    finally:
        await provider.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m credited.providers", description=__doc__)
    parser.add_argument("--port", type=int, default=8110)
    parser.add_argument("--payments", default="http://127.0.0.1:8101", help="payments' base URL (notify URLs)")
    parser.add_argument("--drop", type=float, default=0.0, help="share of notifications never sent")
    parser.add_argument("--duplicate", type=float, default=0.0, help="share of notifications sent twice")
    parser.add_argument("--max-delay", type=float, default=0.0, help="each notification waits up to this many s")
    parser.add_argument("--retry", type=float, nargs="*", default=[], help="waits before sending a refused one again")
    parser.add_argument("--failure-share", type=float, default=0.0, help="share of API calls answered 500")
    parser.add_argument("--timeout-share", type=float, default=0.0, help="share of API calls whose answer hangs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--env-file", type=Path, default=None, help="write the PAYMENTS_* settings here, not stdout")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
