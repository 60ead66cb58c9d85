"""The composition root of the reconciler: the only place that builds adapters."""

import faust
from prometheus_client import CollectorRegistry

from reconciler.adapters.faust_app import build_app
from reconciler.config import Settings


def build(settings: Settings) -> faust.App:
    return build_app(settings, CollectorRegistry(auto_describe=True))
