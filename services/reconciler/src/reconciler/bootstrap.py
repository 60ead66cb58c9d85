"""The composition root of the reconciler: the only place that builds adapters."""

import faust
from prometheus_client import CollectorRegistry

from reconciler.adapters.faust_app import build_app
from reconciler.adapters.page_keys import LazyKeyStore
from reconciler.config import Settings
from servicekit.identity import Authenticator


def build(settings: Settings) -> faust.App:
    # Its pages read the API keys every service reads (DATABASE_URL, CREDITED_IDENTITY_SCHEMA), cached.
    keys = LazyKeyStore(settings.database_url, settings.identity_schema)
    authenticator = Authenticator(
        keys, ttl_s=settings.api_key_cache_ttl_s, development_keys=settings.environment == "development"
    )
    return build_app(settings, CollectorRegistry(auto_describe=True), authenticator)
