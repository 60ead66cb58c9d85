"""A TCP proxy in front of PostgreSQL that a test takes down and brings back, as a PostgreSQL server stopped and
started again looks to its clients: while down, every open connection is reset and new ones are refused."""

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from credited.stack.processes import free_port


def proxied(database_url: str) -> tuple[tuple[str, int], int, str]:
    """A proxy's plan for `database_url`: the database's (host, port), a free local port, and the DSN through it."""
    parts = urlsplit(database_url)
    port = free_port()
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    dsn = urlunsplit((parts.scheme, f"{netloc[0]}@{host}" if len(netloc) == 2 else host, parts.path, parts.query, ""))
    return (parts.hostname or "127.0.0.1", parts.port or 5432), port, dsn


class PostgresProxy:
    def __init__(self, database_url: str) -> None:
        self._target, self.port, self.dsn = proxied(database_url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except Exception:  # noqa: BLE001
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
