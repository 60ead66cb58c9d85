"""The composition root of the reconciler: the only place that builds adapters."""

import faust
from prometheus_client import CollectorRegistry

from reconciler.adapters.faust_app import build_app
from reconciler.adapters.tansu import correct_faust_end_offsets, shorten_faust_fetch_wait
from reconciler.config import Settings


def build(settings: Settings) -> faust.App:
    if settings.kafka_broker == "tansu":
        correct_faust_end_offsets(settings.kafka_bootstrap)
        shorten_faust_fetch_wait(50)
    return build_app(settings, CollectorRegistry(auto_describe=True))
