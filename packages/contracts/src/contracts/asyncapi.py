"""The AsyncAPI 3.0 document of credited's topics, generated from the contract models and the catalogue.

Run: python -m contracts.asyncapi   (prints it; `make schemas` writes packages/contracts/asyncapi.json)
"""

import inspect
import json
import sys
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from contracts import __version__
from contracts.base import Message, OrderId
from contracts.catalog import CATALOG, DEAD_LETTER_HEADERS, TopicSpec
from contracts.registry import MODELS, UPCASTERS
from contracts.topics import Topic

KAFKA_BINDING = "0.5.0"
_SCHEMAS = "#/components/schemas/"
_DESCRIPTION = """\
credited's Kafka topics. Every record's value is a JSON object (the message payload), its key is the order
id as UTF-8 (so one order's messages share a partition and stay in order), and six string headers form its
envelope. A consumer decodes a record once, at its edge, by the `event_type` and `schema_version` headers;
one that does not decode goes to `credited.deadletter` with the reason and never stops the consumer.
Unknown payload fields are ignored, so producers may add fields; a breaking change gets a new
`schema_version` and an upcaster that lifts the old payloads. Topic names may carry a deployment prefix
(`CREDITED_TOPIC_PREFIX`), as in tests."""

ENVELOPE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "The envelope: Kafka headers, each a UTF-8 string, on every credited record.",
    "required": ["event_type", "schema_version", "event_id", "correlation_id", "occurred_at", "producer"],
    "properties": {
        "event_type": {"type": "string", "description": "The message's name, e.g. PaymentSucceeded."},
        "schema_version": {
            "type": "string",
            "pattern": "^[1-9][0-9]*$",
            "description": "The payload's version as decimal digits; older versions are lifted by upcasters.",
        },
        "event_id": {
            "type": "string",
            "minLength": 1,
            "description": "Unique per fact: a repeat of the same fact carries the same id, and consumers"
            " drop a second copy by it.",
        },
        "correlation_id": {
            "type": "string",
            "minLength": 1,
            "description": "Ties the messages of one flow together; the order id unless told otherwise.",
        },
        "occurred_at": {
            "type": "string",
            "format": "date-time",
            "description": "When the fact happened, ISO 8601 with a UTC offset (naive times are refused).",
        },
        "producer": {"type": "string", "minLength": 1, "description": "The system that published the record."},
    },
}


ORDER_KEY: dict[str, Any] = {
    **TypeAdapter(OrderId).json_schema(),
    "description": "The order id as UTF-8. Every message about one order has it, so they land on one partition"
    " and are read in the order they were written.",
}


def accepted_versions(model: type[Message]) -> list[str]:
    """The schema versions consumers decode: the current one and every older one an upcaster chain lifts."""
    versions = [model.schema_version]
    version = model.schema_version - 1
    while version >= 1 and (model.event_type, version) in UPCASTERS:
        versions.append(version)
        version -= 1
    return [str(v) for v in sorted(versions)]


def _message(model: type[Message]) -> dict[str, Any]:
    doc = inspect.cleandoc(model.__doc__ or model.event_type)
    return {
        "name": model.event_type,
        "title": f"{model.event_type} v{model.schema_version}",
        "summary": doc.splitlines()[0],
        "description": doc,
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "allOf": [
                {"$ref": _SCHEMAS + "EnvelopeHeaders"},
                {
                    "properties": {
                        "event_type": {"const": model.event_type},
                        "schema_version": {"enum": accepted_versions(model)},
                    }
                },
            ],
        },
        "payload": {"$ref": _SCHEMAS + model.__name__},
        "correlationId": {"location": "$message.header#/correlation_id"},
        # The key is inline: the binding's `key` is "a Reference or a Schema", and a bare $ref is both.
        "bindings": {"kafka": {"key": ORDER_KEY, "bindingVersion": KAFKA_BINDING}},
    }


def _dead_letter_message() -> dict[str, Any]:
    headers = {name: {"type": "string", "description": text} for name, text in DEAD_LETTER_HEADERS.items()}
    return {
        "name": "DeadLetter",
        "title": "A record credited gave up on",
        "summary": "Any record that could not be decoded or handled, as it was, with dlq_* headers saying why.",
        "contentType": "application/octet-stream",
        "headers": {"type": "object", "required": ["dlq_reason", "dlq_failed_at"], "properties": headers},
        "payload": {"description": "The original record's value, unchanged (or the undeliverable notification)."},
        "bindings": {"kafka": {"key": {"type": "string"}, "bindingVersion": KAFKA_BINDING}},
    }


def channel_id(topic: Topic) -> str:
    head, *rest = topic.value.split(".")
    return head + "".join(part.capitalize() for part in rest)


def _channel(topic: Topic, summary: str, message_names: list[str]) -> dict[str, Any]:
    return {
        "address": topic.value,
        "title": topic.value,
        "description": summary,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in message_names},
        "bindings": {"kafka": {"topic": topic.value, "bindingVersion": KAFKA_BINDING}},
    }


def _operations(spec: TopicSpec) -> dict[str, Any]:
    channel = channel_id(spec.topic)
    out: dict[str, Any] = {}
    for producer in spec.producers:
        out[f"{producer}.send.{spec.topic.value}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"{producer} publishes to {spec.topic.value}.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m.event_type}"} for m in spec.messages],
        }
    for reader in spec.readers:
        out[f"{reader.service}.receive.{spec.topic.value}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"{reader.service} reads {spec.topic.value} as group {reader.group} and acts on these"
            " messages (it skips the others).",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m.event_type}"} for m in reader.messages],
            "bindings": {
                "kafka": {"groupId": {"type": "string", "enum": [reader.group]}, "bindingVersion": KAFKA_BINDING}
            },
        }
    return out


def _schemas() -> dict[str, Any]:
    models = [(model, "serialization") for _, model in sorted(MODELS.items())]
    _, top = models_json_schema(models, ref_template=_SCHEMAS + "{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top["$defs"])
    schemas["EnvelopeHeaders"] = ENVELOPE_HEADERS
    return schemas


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a JSON-ready dict."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in CATALOG:
        channels[channel_id(spec.topic)] = _channel(spec.topic, spec.summary, [m.event_type for m in spec.messages])
        operations.update(_operations(spec))
    dead = Topic.DEAD_LETTER
    channels[channel_id(dead)] = _channel(dead, "Records credited could not decode or handle.", ["DeadLetter"])
    messages = {m.event_type: _message(m) for spec in CATALOG for m in spec.messages}
    messages["DeadLetter"] = _dead_letter_message()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "credited",
            "version": __version__,
            "description": _DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
    }


def render() -> str:
    """The document as the committed text (packages/contracts/asyncapi.json)."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
