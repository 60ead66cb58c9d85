"""What the provider adapters share on the wire: sending a request, reading headers, naming problems."""

from collections.abc import Mapping

import httpx
from pydantic import ValidationError


class Unanswered(Exception):
    """No answer to trust: the provider did not answer, failed, or its answer failed its signature check."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its lower-case name, in any mapping (httpx and Starlette headers already ignore case)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def problems(exc: ValidationError) -> str:
    """A validation error in one line: where and what, as credited's 422 answers say it."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())[:500]


async def send(
    client: httpx.AsyncClient, method: str, url: httpx.URL, body: bytes, headers: Mapping[str, str], who: str
) -> httpx.Response:
    """The provider's answer below 500; Unanswered for a timeout, a lost connection or a server error,
    after which the request's effect is unknown."""
    try:
        response = await client.request(method, url, content=body or None, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise Unanswered(f"no answer from {who}: {exc!r}"[:200]) from None
    if response.status_code >= 500:
        raise Unanswered(f"{who} answered {response.status_code}: {response.text[:120]}")
    return response
