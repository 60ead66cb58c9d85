"""What an unauthenticated sender can make payments keep: the callback route needs no key (the provider's
signature is its authentication), and every refused callback is kept for audit in `callbacks` (those nothing was
read from for PAYMENTS_REFUSED_CALLBACKS_KEEP_S, 30 days). The body is cut to REFUSED_BODY_KEPT (4 KiB) "while
anyone can post unsigned junk as often as they like" (payments.callbacks); the X-Signature header is kept whole."""

import asyncio

import asyncpg
import httpx

from payments.callbacks import REFUSED_BODY_KEPT
from payments.config import Settings
from tests.payments.integration.test_callback_fuzz import payments  # noqa: F401 - the fixture


def stored(settings: Settings) -> tuple[int, int]:
    """(rows, bytes kept in body + signature_header + reason) of the callback audit."""

    async def read() -> tuple[int, int]:
        conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
        try:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(octet_length(body) + coalesce(octet_length(signature_header), 0)"
                " + octet_length(reason)), 0) AS b FROM callbacks"
            )
            assert row is not None
            return int(row["n"]), int(row["b"])
        finally:
            await conn.close()

    return asyncio.run(read())


def test_an_unsigned_callback_keeps_at_most_a_few_kib_for_audit_whatever_its_headers(
    payments: tuple[httpx.Client, Settings],  # noqa: F811
) -> None:
    """Anyone on the internet can POST /v1/psp/sim/callbacks without a key. Each refused one is written to the payments
    database for its keep time (30 days); the body is capped at 4 KiB so that junk cannot fill the disk, but the
    X-Signature header is stored whole, so every anonymous request can leave many times that (here 12 KB; uvicorn takes
    headers far larger). At 1,500 junk requests/s of 12 KB a day that is ~1.5 TB in the payments primary (and its WAL
    and replicas), which stops order taking and callbacks (money) once the disk fills. Expected: the signature kept is
    cut like the body (or refused junk is not kept whole at all)."""
    client, settings = payments
    rows_before, bytes_before = stored(settings)
    n = 20
    junk_signature = "t=1,v1=" + "a" * 12_000
    for _ in range(n):
        response = client.post(
            "/v1/psp/sim/callbacks",
            content=b'{"order_id": "ord_x", "status": "succeeded"}',
            headers={"X-Signature": junk_signature, "Content-Type": "application/json"},
        )
        assert response.status_code == 401, response.text
    rows, kept = stored(settings)
    assert rows - rows_before == n  # each anonymous request is a row, kept for its keep time
    per_request = (kept - bytes_before) / n
    assert per_request <= REFUSED_BODY_KEPT + 1024, (
        f"each refused anonymous callback kept {per_request:.0f} bytes in the payments database (cap"
        f" {REFUSED_BODY_KEPT} for the body): the X-Signature header is stored whole"
    )
