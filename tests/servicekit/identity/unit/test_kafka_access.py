"""The Kafka ACL matrix is the code's: what each service's source consumes (topics and groups) and publishes,
read from the source itself, so a new topic or consumer group without its grant fails here."""

import ast

import pytest

from contracts.topics import Topic
from servicekit.kafka_access import ACCESS, RECONCILER_APP, Operation, Pattern, Resource, grants
from tests.conftest import ROOT


def modules(service: str) -> list[ast.Module]:
    source = ROOT / "services" / service / "src" / service
    paths = [p for p in source.rglob("*.py") if "bench" not in p.relative_to(source).parts[0]]
    return [ast.parse(p.read_text()) for p in paths]


def topic_of(node: ast.AST) -> Topic | None:
    """`Topic.X` (or `Topic.X.qualified(...)`) as the Topic it names."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "qualified":
        node = node.func.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Topic":
        return Topic[node.attr]
    return None


def referenced(trees: list[ast.Module]) -> set[Topic]:
    return {t for tree in trees for node in ast.walk(tree) if (t := topic_of(node)) is not None}


def consumed(trees: list[ast.Module]) -> tuple[set[Topic], set[str]]:
    """Topics and groups of every `<infra>.consume("group", [Topic.X, ...], handler)` call."""
    topics: set[Topic] = set()
    groups: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "consume":
                group, listed = node.args[0], node.args[1]
                assert isinstance(group, ast.Constant) and isinstance(listed, ast.List)
                groups.add(str(group.value))
                topics |= {t for element in listed.elts if (t := topic_of(element)) is not None}
    return topics, groups


@pytest.mark.parametrize("service", ["payments", "ledger", "notifier"])
def test_a_consumer_service_reads_exactly_what_it_consumes_and_writes_everything_else_it_names(service: str) -> None:
    trees = modules(service)
    reads, groups = consumed(trees)
    access = ACCESS[service]
    assert (access.reads, set(access.groups)) == (reads, groups)
    # Every consumer dead-letters what it cannot handle, through servicekit.
    assert access.writes == (referenced(trees) - reads) | {Topic.DEAD_LETTER}


def test_the_reconciler_reads_its_joined_inputs_writes_the_rest_and_owns_its_faust_topics() -> None:
    trees = modules("reconciler")
    inputs = {
        t
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(isinstance(n, ast.Name) and n.id == "inputs" for n in node.targets)
        for element in getattr(node.value, "elts", [])
        if (t := topic_of(element)) is not None
    }
    access = ACCESS["reconciler"]
    assert access.reads == inputs == {Topic.PAYMENTS_EVENTS, Topic.LEDGER_EVENTS}
    assert access.writes == referenced(trees) - inputs
    app = (ROOT / "services/reconciler/src/reconciler/adapters/faust_app.py").read_text()
    assert f'f"{{prefix}}{RECONCILER_APP}"' in app, "faust's app id (its group and topic prefix) changed"
    assert access.groups == (RECONCILER_APP,) and access.owns_prefix == f"{RECONCILER_APP}-"


def test_only_the_reconciler_commands_and_no_one_reads_the_dead_letters() -> None:
    writers = {t: {p for p, a in ACCESS.items() if t in a.writes} for t in Topic}
    assert writers[Topic.LEDGER_COMMANDS] == writers[Topic.PAYMENTS_COMMANDS] == {"reconciler"}
    assert writers[Topic.PAYMENTS_EVENTS] == {"payments"} and writers[Topic.LEDGER_EVENTS] == {"ledger"}
    assert all(Topic.DEAD_LETTER not in a.reads for a in ACCESS.values())


def test_grants_follow_a_prefix_and_give_no_wildcard() -> None:
    prefixed = grants("t1.")
    assert all(g.name.startswith("t1.") for g in prefixed)
    assert len(prefixed) == len(grants())
    assert all(g.name not in ("*", "t1.") for g in prefixed)
    reconciler_prefixed = {(g.operation, g.name) for g in prefixed if g.pattern is Pattern.PREFIXED}
    assert reconciler_prefixed == {
        (op, f"t1.{RECONCILER_APP}-") for op in (Operation.READ, Operation.WRITE, Operation.CREATE, Operation.DESCRIBE)
    }
    assert {g.principal for g in prefixed if g.resource is Resource.GROUP} == set(ACCESS)
