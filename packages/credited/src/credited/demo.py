"""`credited demo`: the whole stack plus the simulator, with live progress and a scored summary."""

import asyncio
import itertools
import logging
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from contracts.topics import Topic
from credited.stack.local import LocalStack, StackConfig
from credited.stack.processes import free_port
from harness.bench import wrk
from harness.bench.driver import AiohttpSimulator, ClientTimes, session
from harness.simulator.receiver import Received, WebhookReceiver
from harness.simulator.run import FINAL, Load, Truth, credit_publication_times, fast_reads, order_of, score
from harness.simulator.story import StoryCounts, startup_failure, story_counts
from harness.simulator.tail import CommandTail

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
    callback_loss: float = 0.0
    """Share of the local provider's payment notifications it drops (payments finds those by query)."""


COLUMNS = ("orders", "paid", "credited", "overdue\nflagged", "retried", "recovered", "refunded", "users\ntold", "s")


def _table(counts: StoryCounts, elapsed: float) -> Table:
    table = Table(title="credited demo", show_header=True, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for column in COLUMNS:
        table.add_column(column, justify="right", no_wrap=True)
    c = counts
    figures = (c.orders, c.paid, c.credited, c.flagged, c.retried, c.recovered, c.refunded, c.users_told)
    table.add_row(*(str(n) for n in figures), f"{elapsed:.1f}")
    return table


class LiveCounts:
    """The live table's row from what the users were told (the webhook) and the retries on the broker, kept up
    as notifications arrive: each recount reads only the notifications that came since the last, so the table
    costs the cores the stack runs on next to nothing however many orders came before."""

    def __init__(self, truth: Truth, received: Received, retries: CommandTail) -> None:
        self._truth, self._received, self._retries = truth, received, retries
        self._read = 0
        self._told: dict[str, set[str]] = {}
        self._credited_at: dict[str, float] = {}
        self._final: set[str] = set()

    def _catch_up(self) -> None:
        payloads = self._received.payloads  # only ever added to, in arrival order
        for p in itertools.islice(payloads.values(), self._read, None):
            status, oid = p["status"], p["order_id"]
            self._told.setdefault(status, set()).add(oid)
            if status in FINAL:
                self._final.add(oid)
            if status == "credited" and p.get("credited_at"):
                self._credited_at[oid] = datetime.fromisoformat(p["credited_at"]).timestamp()
        self._read = len(payloads)

    def __call__(self) -> StoryCounts:
        self._catch_up()
        truth = self._truth
        return story_counts(
            len(truth.orders), truth.paid, self._told, self._credited_at, self._retries.first_sent, self._read
        )

    def settled(self) -> int:
        """How many paid orders have reached a final status at the webhook (run.settled, kept up)."""
        self._catch_up()
        return len(self._truth.paid & self._final)


class StartupFailed(Exception):
    """The stack did not start; the message is the one line to print."""


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
        keys_path=options.run_dir.parent / "dev-keys.json",
        callback_loss=options.callback_loss,
        provider_duplicate_share=options.duplicate_share,
    )
    if config.psp_secret == "sim-secret":
        console.print("PAYMENTS_PSP_SECRET_SIM is unset: the simulated provider signs with 'sim-secret'")
    stack = LocalStack(config)
    try:
        console.print("starting the broker, PostgreSQL and the four services ...")
        started = time.monotonic()
        try:
            await asyncio.to_thread(stack.start)
        except Exception as exc:
            log.debug("the stack did not start", exc_info=True)
            raise StartupFailed(startup_failure(exc, config.run_dir / "logs")) from exc
        console.print(f"stack up in {time.monotonic() - started:.1f}s (broker {stack.bootstrap})")
        console.print(f"API key with every scope (development): {stack.keys_path}")
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


async def _drive(stack: LocalStack, load: Load, truth: Truth, client: httpx.AsyncClient, options: DemoOptions) -> str:
    """Place and pay the orders: with wrk when it is installed and no notification is to be lost (native, so
    the demo's own client can offer well over a thousand orders a second on two cores shared with the stack;
    it pays every channel through the `sim` provider), else the simulator over aiohttp, which pays the
    `wechat` and `alipay` orders at the local provider. Which one it was."""
    if wrk.available() and options.callback_loss == 0:
        url, secret, key = stack.url("payments"), stack.config.psp_secret, stack.api_key
        await wrk.drive(url, secret, load, truth, options.run_dir, api_key=key)
        return "wrk (every channel through the sim provider)"
    async with session(load.concurrency, ClientTimes(), headers=stack.headers) as http:
        simulator = AiohttpSimulator(stack.url("payments"), stack.config.psp_secret, client, http)
        simulator.provider_url = stack.provider_url or None
        await simulator.drive(load, truth)
    return "python (aiohttp; wechat and alipay paid at the local provider)"


async def _drive_and_score(
    stack: LocalStack, receiver: WebhookReceiver, options: DemoOptions, console: Console
) -> dict[str, Any]:
    truth = Truth()
    received = receiver.received
    retries = CommandTail(stack.bootstrap, Topic.LEDGER_COMMANDS.qualified(stack.config.topic_prefix))
    tailing = asyncio.create_task(retries.run())
    try:
        summary = await _drive_and_watch(stack, truth, received, retries, options, console)
        await retries.caught_up()
    finally:
        tailing.cancel()
        await asyncio.gather(tailing, return_exceptions=True)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits, headers=stack.headers) as client,
        fast_reads(stack.headers) as reads,
    ):
        topic = Topic.LEDGER_EVENTS.qualified(stack.config.topic_prefix)
        scored = await score(
            truth,
            received,
            ledger_url=stack.url("ledger"),
            client=client,
            elapsed_s=summary,
            threshold_s=options.threshold_s,
            credit_visible_at=await credit_publication_times(stack.bootstrap, topic),
            retried_at=retries.first_sent,
            recovered_by_query=await _recovered_by_query(client, stack) if stack.provider_url else None,
            reads=reads,
        )
        if stack.provider_url:
            scored |= await _provider_check(stack, truth)
        affected = _affected_order(truth, received, retries)
        if affected is not None:
            scored["affected_order"] = await _show_order(stack, client, affected, options.run_dir)
    return scored


async def _drive_and_watch(
    stack: LocalStack,
    truth: Truth,
    received: Received,
    retries: CommandTail,
    options: DemoOptions,
    console: Console,
) -> float:
    """Drive the load and show the live table until every paid order settled (or the timeout); the seconds
    that took."""
    start = time.monotonic()

    counts = LiveCounts(truth, received, retries)

    def view() -> Table:
        return _table(counts(), time.monotonic() - start)

    # Enough connections to offer the rate while answers take a while: at 1,500 orders/s (3,300 requests/s)
    # 512 of them keep the offer up until payments answers in 150 ms on average.
    load = Load(orders=options.orders, rate=options.rate, duplicate_share=options.duplicate_share, concurrency=512)
    timeout = options.settle_timeout_s or (options.orders / options.rate + 4 * options.threshold_s + 120)
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100), headers=stack.headers
    ) as client:
        driving = asyncio.create_task(_drive(stack, load, truth, client, options))
        try:
            with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    live.update(view())
                    if driving.done() and counts.settled() >= len(truth.paid):
                        break
                    await asyncio.sleep(0.25)
                generator = await driving
                # let late duplicates and status updates land before counting them
                await asyncio.sleep(1.0)
                live.update(view())
        finally:
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)
    if not console.is_terminal:
        console.print()  # a live table's last frame ends its line only on a terminal
    console.print(f"orders and callbacks sent by {generator}")
    unsettled = len(truth.paid) - counts.settled()
    if unsettled > 0:
        console.print(f"[red]{unsettled} paid orders did not settle within {timeout:.0f}s[/red]")
    return time.monotonic() - start


async def _recovered_by_query(client: httpx.AsyncClient, stack: LocalStack) -> int:
    """payments' own count of payments found by asking the provider (all its processes, every provider)."""
    text = (await client.get(stack.metrics_url("payments"))).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "payments_recovered_by_query_total"
        )
    )


async def _provider_check(stack: LocalStack, truth: Truth) -> dict[str, Any]:
    """The local provider's own account of the notifications it dropped and repeated, to check the simulator's
    truth against: the orders it says it dropped must be exactly those the simulator was told were."""
    stats = await asyncio.to_thread(stack.provider_stats)
    dropped = {order_of(*entry.split(":", 1)) for entry in stats["dropped"]} & truth.orders.keys()
    truth.duplicate_callbacks += int(stats["sends"].get("duplicated", 0))
    return {
        "duplicate_callbacks": truth.duplicate_callbacks,
        "provider_notifications": stats["notifications"],
        "provider_dropped_agrees": dropped == truth.callback_dropped,
    }


def _affected_order(truth: Truth, received: Received, retries: CommandTail) -> str | None:
    """One order the fault hit, to show: flagged and retried if any was, else flagged, else None."""
    flagged: list[str] = sorted(
        p["order_id"] for p in received.payloads.values() if p["status"] == "delayed" and p["order_id"] in truth.paid
    )
    retried = [oid for oid in flagged if oid in retries.first_sent]
    chosen = retried or flagged
    return chosen[0] if chosen else None


async def _status_url(stack: LocalStack, client: httpx.AsyncClient, order_id: str) -> str:
    """The user's signed link to the order's status page, as payments answers it (a bare one gets 404)."""
    try:
        return str((await client.get(f"{stack.url('payments')}/v1/orders/{order_id}")).json()["status_url"])
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning("no status link for order %s: %r", order_id, exc)
        return f"{stack.url('notifier')}/orders/{order_id}"


async def _show_order(stack: LocalStack, client: httpx.AsyncClient, order_id: str, run_dir: Path) -> dict[str, str]:
    """The order's status page (notifier) and timeline (reconciler), with copies saved before the stack stops."""
    links = {
        "status_page": await _status_url(stack, client, order_id),
        "timeline": f"{stack.url('reconciler')}/v1/orders/{order_id}/timeline",
    }
    saved = run_dir / "affected-order"
    saved.mkdir(parents=True, exist_ok=True)
    for name, url, suffix in (("status", links["status_page"], "html"), ("timeline", links["timeline"], "json")):
        try:
            answer = await client.get(url)
            (saved / f"{order_id}.{name}.{suffix}").write_bytes(answer.content)
        except httpx.HTTPError as exc:
            log.warning("could not save %s of order %s: %r", name, order_id, exc)
    return {"order_id": order_id, **links, "saved": f"{saved}/{order_id}.*"}
