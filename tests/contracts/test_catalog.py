"""The catalogue (which topic carries which messages, who writes and who reads them) says what the services
do: checked against their source, so the AsyncAPI document cannot drift from the code either."""

import ast
from pathlib import Path

from contracts.catalog import CATALOG
from contracts.registry import MODELS
from reconciler.engine import TRANSITIONS

SERVICES = Path(__file__).resolve().parents[2] / "services"


def _topic(node: ast.expr) -> str | None:
    """`Topic.PAYMENTS_EVENTS` -> "PAYMENTS_EVENTS"."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Topic":
        return node.attr
    return None


def _models_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in MODELS}


def consumed(service: str) -> set[tuple[str, str, str]]:
    """(group, topic, message) for every `infra.consume(group, [Topic.X, ...], route({Message: ...}))` in bootstrap:
    of the messages it routes, those the topic carries (a consumer of several topics refuses any other from one,
    servicekit.consumer's `wrong_topic`)."""
    carried = {spec.topic.name: {m.event_type for m in spec.messages} for spec in CATALOG}
    tree = ast.parse((SERVICES / service / "src" / service / "bootstrap.py").read_text())
    found: set[tuple[str, str, str]] = set()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "consume" and len(call.args) >= 3):
            continue
        group, topics, routes = call.args[:3]
        assert isinstance(group, ast.Constant) and isinstance(topics, ast.List)
        for topic in filter(None, map(_topic, topics.elts)):
            found |= {(str(group.value), topic, model) for model in _models_in(routes) if model in carried[topic]}
    return found


def published(service: str) -> set[tuple[str, str]]:
    """(topic, message) for every `publish(Topic.X, Message(...))` in the service's source, and every
    `Announcement(Topic.X, message, ...)` (an event written with its order) whose message is made in place or
    assigned from `Message(...)` in the same function."""
    found: set[tuple[str, str]] = set()
    for path in (SERVICES / service / "src").rglob("*.py"):
        for scope in (
            n
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef)
        ):
            made = {
                target.id: node.value.func.id
                for node in ast.walk(scope)
                if isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for call in (n for n in ast.walk(scope) if isinstance(n, ast.Call) and _sends(n)):
                topic, message = _topic(call.args[0]), call.args[1]
                if isinstance(message, ast.Call) and isinstance(message.func, ast.Name):
                    model: str | None = message.func.id
                else:
                    model = made.get(message.id) if isinstance(message, ast.Name) else None
                if topic and model in MODELS:
                    found.add((topic, model))
    return found


def _sends(call: ast.Call) -> bool:
    publish = isinstance(call.func, ast.Attribute) and call.func.attr == "publish"
    announce = isinstance(call.func, ast.Name) and call.func.id == "Announcement"
    return (publish or announce) and len(call.args) >= 2


def test_the_groups_the_catalogue_names_read_what_the_services_route() -> None:
    listed = {
        (reader.group, spec.topic.name, m.event_type)
        for spec in CATALOG
        for reader in spec.readers
        if reader.service != "reconciler"
        for m in reader.messages
    }
    assert listed == consumed("ledger") | consumed("payments") | consumed("notifier")


def test_the_reconciler_reads_what_its_engine_has_transitions_for() -> None:
    listed = {m for spec in CATALOG for r in spec.readers if r.service == "reconciler" for m in r.messages}
    assert listed == set(TRANSITIONS)


def test_payments_and_the_ledger_publish_their_messages_on_the_topics_the_catalogue_names() -> None:
    """Every event of a topic a service owns; on a commands topic the reconciler shares with payments' support API,
    the commands a person may send (payments sends no IssueRefund: a person's refund is a BlockCredit first, the
    refund the reconciler's after the ledger's final rejection)."""
    for service in ("payments", "ledger"):
        listed = {(s.topic.name, m.event_type) for s in CATALOG if service in s.producers for m in s.messages}
        shared = {s.topic.name for s in CATALOG if service in s.producers and len(s.producers) > 1}
        sent = published(service)
        assert {t for t, _ in sent} == {t for t, _ in listed}, service
        assert {e for e in sent if e[0] not in shared} == {e for e in listed if e[0] not in shared}, service
        assert sent <= listed, service
    assert published("payments") >= {
        ("LEDGER_REDRIVES", "RedriveCredit"),
        ("LEDGER_COMMANDS", "GrantCompensation"),
        ("LEDGER_COMMANDS", "BlockCredit"),
    }
    assert ("LEDGER_COMMANDS", "RetryCredit") not in published("payments")  # a re-drive never goes there
    assert not any(t == "PAYMENTS_COMMANDS" for t, _ in published("payments"))
