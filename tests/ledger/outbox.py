"""Reads the ledger's outbox rows back as contract messages, for assertions on what a unit of work announced."""

import asyncpg
import orjson

from contracts.base import Message
from contracts.codec import Envelope, decode


async def outbox_messages(
    conn: asyncpg.Connection | asyncpg.Pool, after_id: int = 0
) -> list[tuple[int, Message, Envelope]]:
    """(outbox id, message, envelope) of every row after `after_id`, in id order."""
    rows = await conn.fetch("SELECT id, value, headers FROM outbox WHERE id > $1 ORDER BY id", after_id)
    out = []
    for row in rows:
        message, envelope = decode(row["value"], [(k, v.encode()) for k, v in orjson.loads(row["headers"])])
        out.append((row["id"], message, envelope))
    return out
