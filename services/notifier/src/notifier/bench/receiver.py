"""A Web Push service on loopback for the benchmark: it accepts every push (201), notes when it arrived
and under which Topic, and tells the benchmark. It runs in its own process, as a real push service is not
in the notifier's. It does not decrypt: the tests prove the encryption, the benchmark times delivery.

    python -m notifier.bench.receiver --port 8199
"""

import argparse
import time

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Arrivals:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.times: list[float] = []

    async def push(self, request: Request) -> Response:
        await request.body()
        self.times.append(time.monotonic())  # CLOCK_MONOTONIC: comparable with the benchmark process's
        self.topics.append(request.headers.get("topic", ""))
        return Response(status_code=201)

    async def count(self, _: Request) -> Response:
        return Response(str(len(self.topics)))

    async def dump(self, _: Request) -> Response:
        return Response(orjson.dumps({"topics": self.topics, "times": self.times}), media_type="application/json")

    async def reset(self, _: Request) -> Response:
        self.topics.clear()
        self.times.clear()
        return Response(status_code=204)


def app(arrivals: Arrivals) -> Starlette:
    return Starlette(
        routes=[
            Route("/push/{device}", arrivals.push, methods=["POST"]),
            Route("/arrivals/count", arrivals.count),
            Route("/arrivals", arrivals.dump),
            Route("/arrivals", arrivals.reset, methods=["DELETE"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app(Arrivals()), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
