"""`credited dlq ...` run as an operator runs it: its own process, with the services' Kafka settings for `broker` and
the test's topic prefix; its exit code and what it printed."""

import asyncio
import sys
from pathlib import Path

from tests.conftest import Broker

CREDITED = Path(sys.executable).parent / "credited"


async def run_dlq(broker: Broker, prefix: str, *args: str) -> tuple[int, str]:
    env = {
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "KAFKA_BROKER": "tansu" if broker.kind == "embedded" else "apache",
        "CREDITED_TOPIC_PREFIX": prefix,
        "PATH": "/usr/bin:/bin",
    }
    process = await asyncio.create_subprocess_exec(
        str(CREDITED), "dlq", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode()
