"""The whole stack for end-to-end tests: the four services as processes on the test's broker and database."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from credited.simulator.receiver import WebhookReceiver
from credited.stack.local import SERVICES, LocalStack, StackConfig
from credited.stack.processes import free_port
from tests.conftest import Broker


@asynccontextmanager
async def running_stack(
    broker: Broker, database_url: str, isolation: str, run_dir: Path, **config: object
) -> AsyncIterator[tuple[LocalStack, WebhookReceiver]]:
    receiver = WebhookReceiver(free_port(), "e2e-webhook-secret")
    await receiver.start()
    stack = LocalStack(
        StackConfig(
            run_dir=run_dir,
            kafka_bootstrap=broker.bootstrap,
            kafka_broker="tansu" if broker.kind == "embedded" else "apache",
            database_url=database_url,
            ports={name: free_port() for name in SERVICES},
            topic_prefix=f"{isolation}.",
            db_schema_prefix=f"{isolation}_",
            webhook_url=receiver.url,
            webhook_secret=receiver.secret,
            psp_secret="e2e-psp-secret",
            **config,  # type: ignore[arg-type]
        )
    )
    try:
        await asyncio.to_thread(stack.start)
        yield stack, receiver
    finally:
        await asyncio.to_thread(stack.stop)
        await receiver.stop()
