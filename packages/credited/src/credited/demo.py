"""`credited demo`: the whole stack plus the simulator, with live progress and a scored summary."""

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from contracts.topics import Topic
from credited.bench import wrk
from credited.bench.driver import AiohttpSimulator, ClientTimes, session
from credited.simulator.receiver import WebhookReceiver
from credited.simulator.run import Load, Truth, credit_publication_times, score, settled
from credited.stack.local import LocalStack, StackConfig
from credited.stack.processes import free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    orders: int
    rate: float
    credit_loss: float
    threshold_s: float
    duplicate_share: float
    run_dir: Path
    settle_timeout_s: float | None = None


def _table(truth: Truth, received_orders: int, credited: int, overdue: int, elapsed: float) -> Table:
    table = Table(title="credited demo", show_header=True)
    for column in ("orders", "paid", "credited", "overdue flagged", "notifications", "elapsed s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(truth.orders)),
        str(len(truth.paid)),
        str(credited),
        str(overdue),
        str(received_orders),
        f"{elapsed:.1f}",
    )
    return table


async def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    # Ctrl-C or SIGTERM cancels the run and the `finally` below stops every process, whatever signal
    # disposition the demo inherited (a background job starts with SIGINT ignored).
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    receiver = WebhookReceiver(free_port(), "webhook-secret")
    await receiver.start()
    config = StackConfig.from_environment(
        options.run_dir,
        threshold_s=options.threshold_s,
        credit_loss=options.credit_loss,
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
    )
    if config.psp_secret == "sim-secret":
        console.print("PAYMENTS_PSP_SECRET_SIM is unset: the simulated provider signs with 'sim-secret'")
    stack = LocalStack(config)
    try:
        console.print("starting the broker, PostgreSQL and the four services ...")
        started = time.monotonic()
        await asyncio.to_thread(stack.start)
        console.print(f"stack up in {time.monotonic() - started:.1f}s (broker {stack.bootstrap})")
        reviving = asyncio.create_task(_revive(stack, console))
        try:
            return await _drive_and_score(stack, receiver, options, console)
        finally:
            reviving.cancel()
    finally:
        await asyncio.to_thread(stack.stop)
        await receiver.stop()


async def _revive(stack: LocalStack, console: Console) -> None:
    """A service that stopped itself with exit code 75 is started again, as compose would."""
    while True:
        for name in await asyncio.to_thread(stack.revive):
            console.print(f"{name} stopped itself (exit 75) and was started again")
        await asyncio.sleep(1)


async def _drive(stack: LocalStack, load: Load, truth: Truth, client: httpx.AsyncClient, run_dir: Path) -> str:
    """Place and pay the orders: with wrk when it is installed (native, so the demo's own client can offer well
    over a thousand orders a second on two cores shared with the stack), else the simulator over aiohttp.
    Which one it was."""
    if wrk.available():
        await wrk.drive(stack.url("payments"), stack.config.psp_secret, load, truth, run_dir)
        return "wrk"
    async with session(load.concurrency, ClientTimes()) as http:
        await AiohttpSimulator(stack.url("payments"), stack.config.psp_secret, client, http).drive(load, truth)
    return "python (aiohttp)"


async def _drive_and_score(
    stack: LocalStack, receiver: WebhookReceiver, options: DemoOptions, console: Console
) -> dict[str, Any]:
    truth = Truth()
    received = receiver.received
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.monotonic()

        def view() -> Table:
            by_status = [p["status"] for p in received.payloads.values()]
            return _table(
                truth,
                len(received.payloads),
                by_status.count("credited"),
                by_status.count("delayed"),
                time.monotonic() - start,
            )

        # Enough connections to offer the rate while answers take a while: at 1,500 orders/s (3,300 requests/s)
        # 512 of them keep the offer up until payments answers in 150 ms on average.
        load = Load(orders=options.orders, rate=options.rate, duplicate_share=options.duplicate_share, concurrency=512)
        driving = asyncio.create_task(_drive(stack, load, truth, client, options.run_dir))
        timeout = options.settle_timeout_s or (options.orders / options.rate + 4 * options.threshold_s + 120)
        try:
            with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    live.update(view())
                    if driving.done() and settled(truth, received) >= len(truth.paid):
                        break
                    await asyncio.sleep(0.25)
                generator = await driving
                live.update(view())
        finally:
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)
        console.print(f"orders and callbacks sent by {generator}")
        if settled(truth, received) < len(truth.paid):
            console.print(
                f"[red]{len(truth.paid) - settled(truth, received)} paid orders did not settle "
                f"within {timeout:.0f}s[/red]"
            )
        # let late duplicates and status updates land before counting them
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - start
        topic = Topic.LEDGER_EVENTS.qualified(stack.config.topic_prefix)
        return await score(
            truth,
            received,
            ledger_url=stack.url("ledger"),
            client=client,
            elapsed_s=elapsed,
            threshold_s=options.threshold_s,
            credit_visible_at=await credit_publication_times(stack.bootstrap, topic),
        )
