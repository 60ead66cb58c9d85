"""The two hot routes, POST /v1/orders and POST /v1/psp/{provider}/callbacks, answered ahead of FastAPI.

Most of a request's CPU went to the framework (routing over every route, dependency injection, validating a
dict parsed by the json module, the response model). Here a plain request is validated straight from its
bytes by the same pydantic model, goes to the same group commit, and gets the same JSON. Anything else (not
JSON, invalid, a repeated or oversized header, an unusual provider name) is handed to the FastAPI route, so
every error answer stays exactly what it was. The routes stay declared in FastAPI for the OpenAPI document.

An order needs an API key with `orders:write`, checked here by the app's own Authenticator (its cache, so no
database round trip per request); a request without one is handed on, and FastAPI answers the 401 or 403.
The callback is authenticated by its provider's signature, not by a key. Only callbacks answered with
credited's JSON (providers with an HMAC secret, and unknown names) are answered here; WeChat Pay's and
Alipay's, answered in their own forms, go to the FastAPI route.
"""

import re

import orjson
from pydantic import ValidationError
from starlette.datastructures import Headers

from payments.adapters.grouping import GroupCommit
from payments.adapters.http import OrderRequest, StatusLink, linked_view
from payments.adapters.metrics import PrometheusPaymentsMetrics
from payments.callbacks import Callback, CallbackResult
from payments.domain import Settlements
from payments.handlers import IdempotencyConflict, Placed, PlaceOrder
from servicekit.http import Answer, FastRoute, error_body
from servicekit.identity import Authenticator, Caller, Scope, Unauthenticated

_PROVIDER = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
_JSON = frozenset({"application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"})
IDEMPOTENCY_KEY_MAX = 200


def _repeated(headers: Headers, *names: str) -> bool:
    """Whether one of the headers comes more than once (left to the framework)."""
    return any(len(headers.getlist(name)) > 1 for name in names)


async def _caller(authenticator: Authenticator, headers: Headers, scope: Scope) -> Caller | None:
    """Who sent the request, when it carries one bearer key that holds `scope` (anything else is the app's to
    refuse)."""
    values = headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, key = values[0].partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        caller = await authenticator.authenticate(key.strip())
    except Unauthenticated:
        return None
    return caller if scope in caller.scopes else None


def fast_routes(
    *,
    orders: GroupCommit[PlaceOrder, Placed],
    callbacks: GroupCommit[Callback, CallbackResult],
    metrics: PrometheusPaymentsMetrics,
    authenticator: Authenticator,
    status_url: StatusLink,
    own_form: frozenset[str] = frozenset(),
    settlements: Settlements,
) -> list[FastRoute]:
    """`own_form`: the providers whose callbacks are answered in their own form, not credited's JSON."""

    async def place(_: re.Match[str], headers: Headers, body: bytes) -> Answer | None:
        if _repeated(headers, "content-type", "idempotency-key"):
            return None
        caller = await _caller(authenticator, headers, Scope.ORDERS_WRITE)
        if caller is None:
            return None
        content_type, key = headers.get("content-type", ""), headers.get("idempotency-key")
        if content_type.lower() not in _JSON or (key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX):
            return None
        try:
            request = OrderRequest.model_validate_json(body)
        except ValidationError:
            return None
        if settlements.refusal(request.channel, request.currency) is not None:
            return None  # refused by the full route, in its words
        placed = await orders.submit(
            PlaceOrder(
                request.user_id, request.amount, request.currency, request.channel, key, request.product, caller.name
            )
        )
        if isinstance(placed, IdempotencyConflict):
            return 409, orjson.dumps(error_body("idempotency_key_reused", str(placed)))
        order, created = placed
        if created:
            metrics.order_created(order.channel)
        return (201 if created else 200), orjson.dumps(linked_view(order, status_url))

    async def pay(match: re.Match[str], headers: Headers, body: bytes) -> Answer | None:
        provider = match[1]
        if _repeated(headers, "x-signature") or _PROVIDER.fullmatch(provider) is None or provider in own_form:
            return None
        result = await callbacks.submit(Callback(provider, body, headers.get("x-signature"), headers=headers))
        metrics.callback(provider, result.outcome)
        if result.status_code >= 400:
            return result.status_code, orjson.dumps(error_body(result.code, result.detail))
        return 200, orjson.dumps({"result": result.code, "order_id": result.order_id, "detail": result.detail})

    return [
        FastRoute("POST", re.compile(r"/v1/orders"), "/v1/orders", place),
        FastRoute("POST", re.compile(r"/v1/psp/([^/]+)/callbacks"), "/v1/psp/{provider}/callbacks", pay),
    ]
