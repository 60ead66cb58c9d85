"""A failed outgoing HTTP request in words fit for what people read: a delivery's or a refund's reason (support
staff read those), and the log.

aiohttp's ClientResponseError (a receiver answering something that is not HTTP, a malformed header) carries the
request's RequestInfo, and its repr printed the whole URL and every request header: a Web Push subscription's
endpoint (a capability: whoever has it can push to that device), the VAPID JWT, FCM's bearer token, a provider
call's signed Authorization header. Only the receiver's origin and the error's own words are kept."""

import urllib.parse

import aiohttp


def described(exc: BaseException, url: str) -> str:
    """`exc` raised by a request to `url`: its type, the URL's origin and what went wrong, on one line."""
    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    text = f"{exc.status} {exc.message}" if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    return f"{type(exc).__name__} from {origin}: {' '.join(text.replace(url, origin).split())}"
