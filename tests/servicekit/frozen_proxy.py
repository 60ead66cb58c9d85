"""A TCP proxy in front of PostgreSQL whose open connections a test can freeze: bytes stop flowing both ways and
nothing is closed or reset, as when the database host vanishes (a failover moving its address, a VM gone, a
dropped route). Connections made afterwards go through as usual: the database is reachable again at once."""

import asyncio
import contextlib

from tests.servicekit.pg_proxy import proxied


class FreezingProxy:
    def __init__(self, database_url: str) -> None:
        self._target, self.port, self.dsn = proxied(database_url)
        self._server: asyncio.Server | None = None
        self._frozen: list[asyncio.Event] = []
        self._live: list[tuple[asyncio.Event, list[asyncio.StreamWriter]]] = []

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for _, writers in self._live:
            for w in writers:
                with contextlib.suppress(Exception):
                    w.transport.abort()

    def freeze(self) -> int:
        """Every open connection stops carrying bytes (kept open, never reset); how many."""
        for frozen, _ in self._live:
            frozen.set()
        return len(self._live)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        frozen = asyncio.Event()
        self._live.append((frozen, [writer, up_writer]))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if frozen.is_set():
                        continue  # swallowed: the host is gone, nothing answers and nothing resets
                    dst.write(data)
                    await dst.drain()
            if not frozen.is_set():
                with contextlib.suppress(Exception):
                    dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
