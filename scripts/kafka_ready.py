#!/usr/bin/env python3
"""Readiness probe for a Kafka broker: one Kafka wire-protocol metadata round trip.

Standard library only (scripts/apache-kafka runs it with whatever python3 is on PATH).

It sends ApiVersions v0 to learn which Metadata versions the broker accepts, then a
non-flexible Metadata request (v1..v8, topics = empty list) and parses the reply. The
broker is "ready" when the reply is well formed, lists a broker whose port is the one
probed and, if --cluster-id is given, carries that cluster id (so a different broker that
happens to hold the port is not mistaken for ours).

Exit 0 and print "host:port cluster_id=... controller=... brokers=..." when ready,
exit 1 with a one-line reason on stderr otherwise. Also usable as `gen-cluster-id`.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import struct
import sys
import time
import uuid

API_METADATA = 3
API_SASL_HANDSHAKE = 17
API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36
# Metadata v9+ is "flexible" (compact strings, tagged fields); v1..v8 are plain and enough.
METADATA_MAX_PLAIN = 8
CLIENT_ID = b"credited-kafka-ready"


class ProbeError(Exception):
    """The broker did not answer a well-formed response."""


class Reader:
    """Bounds-checked reader over one response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProbeError(f"truncated response at byte {self.pos} (wanted {n})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return int(struct.unpack(">b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def string(self) -> str | None:
        n = self.int16()
        if n == -1:
            return None
        return self.take(n).decode("utf-8")

    def array_len(self) -> int:
        n = self.int32()
        if n < -1 or n > 100_000:
            raise ProbeError(f"implausible array length {n}")
        return max(n, 0)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProbeError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by broker")
        buf.extend(chunk)
    return bytes(buf)


def round_trip(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> Reader:
    # Request header v1: api_key int16, api_version int16, correlation_id int32,
    # client_id nullable string (int16 length + bytes).
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    if size < 4 or size > 64 * 1024 * 1024:
        raise ProbeError(f"implausible response size {size}")
    reader = Reader(recv_exact(sock, size))
    got = reader.int32()  # response header v0: correlation_id only
    if got != corr:
        raise ProbeError(f"correlation id {got} != {corr}")
    return reader


def api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    r = round_trip(sock, API_VERSIONS, 0, 1, b"")
    error = r.int16()
    if error != 0:
        raise ProbeError(f"ApiVersions error_code={error}")
    ranges: dict[int, tuple[int, int]] = {}
    for _ in range(r.array_len()):
        key, lo, hi = r.int16(), r.int16(), r.int16()
        ranges[key] = (lo, hi)
    r.done()
    if API_METADATA not in ranges:
        raise ProbeError("broker does not list the Metadata API")
    return ranges


def sasl_plain(sock: socket.socket, ranges: dict[int, tuple[int, int]], user: str, password: str) -> None:
    """SASL/PLAIN over the Kafka protocol (SaslHandshake v1, SaslAuthenticate v0/v1), as a client must before
    any other request to a SASL listener."""
    mechanism = b"PLAIN"
    r = round_trip(sock, API_SASL_HANDSHAKE, 1, 3, struct.pack(">h", len(mechanism)) + mechanism)
    error = r.int16()
    offered = [r.string() for _ in range(r.array_len())]
    if error != 0:
        raise ProbeError(f"SaslHandshake error_code={error}, broker offers {offered}")
    version = max(ranges.get(API_SASL_AUTHENTICATE, (0, 0))[0], 0)
    if version > 1:
        raise ProbeError(f"no plain SaslAuthenticate version (broker needs v{version}+)")
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = round_trip(sock, API_SASL_AUTHENTICATE, version, 4, struct.pack(">i", len(token)) + token)
    error = r.int16()
    message = r.string()
    if error != 0:
        raise ProbeError(f"SASL/PLAIN authentication failed: error_code={error} {message or ''}")


def metadata(sock: socket.socket, version: int) -> tuple[list[tuple[int, str, int]], str | None, int]:
    body = struct.pack(">i", 0)  # topics: empty array (v1+: -1 would mean "all topics")
    if version >= 4:
        body += struct.pack(">b", 0)  # allow_auto_topic_creation = false
    if version >= 8:
        body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
    r = round_trip(sock, API_METADATA, version, 2, body)
    if version >= 3:
        r.int32()  # throttle_time_ms
    brokers = []
    for _ in range(r.array_len()):
        node_id = r.int32()
        host = r.string() or ""
        port = r.int32()
        r.string()  # rack
        brokers.append((node_id, host, port))
    cluster_id = r.string() if version >= 2 else None
    controller = r.int32()
    for _ in range(r.array_len()):  # topics: we asked for none, parse anyway
        r.int16()
        r.string()
        r.int8()
        for _ in range(r.array_len()):
            r.int16()
            r.int32()
            r.int32()
            if version >= 7:
                r.int32()
            for _ in range(r.array_len()):
                r.int32()
            for _ in range(r.array_len()):
                r.int32()
            if version >= 5:
                for _ in range(r.array_len()):
                    r.int32()
        if version >= 8:
            r.int32()
    if version >= 8:
        r.int32()  # cluster_authorized_operations
    r.done()
    return brokers, cluster_id, controller


def probe(host: str, port: int, timeout: float, cluster_id: str | None, sasl_user: str | None = None) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        ranges = api_versions(sock)
        if sasl_user is not None:
            sasl_plain(sock, ranges, sasl_user, os.environ.get("KAFKA_READY_SASL_PASSWORD", ""))
        lo, hi = ranges[API_METADATA]
        version = min(hi, METADATA_MAX_PLAIN)
        if version < max(lo, 1):
            raise ProbeError(f"no plain Metadata version in broker range v{lo}..v{hi}")
        brokers, got_cluster, controller = metadata(sock, version)
    if not brokers:
        raise ProbeError("metadata lists no broker yet")
    if not any(p == port for _, _, p in brokers):
        raise ProbeError(f"metadata brokers {brokers} do not include port {port}")
    if cluster_id is not None and got_cluster != cluster_id:
        raise ProbeError(f"cluster id {got_cluster!r} is not ours ({cluster_id!r})")
    listed = ",".join(f"{n}@{h}:{p}" for n, h, p in brokers)
    return f"{host}:{port} cluster_id={got_cluster} controller={controller} brokers={listed} metadata=v{version}"


def gen_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid().toString(): URL-safe base64, no padding,
    # never starting with '-' (it would read as a command-line option).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["gen-cluster-id"]:
        print(gen_cluster_id())
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cluster-id", default=None)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-attempt socket timeout (s)")
    parser.add_argument("--wait", type=float, default=0.0, help="keep retrying for this many seconds")
    parser.add_argument(
        "--sasl-plain-user",
        default=None,
        help="authenticate with SASL/PLAIN first (password: $KAFKA_READY_SASL_PASSWORD)",
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            print(probe(args.host, args.port, args.timeout, args.cluster_id, args.sasl_plain_user))
            return 0
        except (OSError, ProbeError, UnicodeDecodeError, struct.error) as exc:
            if time.monotonic() >= deadline:
                print(
                    f"kafka_ready: {args.host}:{args.port} not ready: {exc}",
                    file=sys.stderr,
                )
                return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
