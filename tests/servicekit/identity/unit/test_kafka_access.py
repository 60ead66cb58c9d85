"""The Kafka ACL matrix follows contracts.catalog (which tests/contracts checks against the services' code)
and the reconciler's faust app id, and grants nothing wider than named topics and groups."""

from contracts.catalog import CATALOG
from contracts.topics import Topic
from servicekit.kafka_access import ACCESS, RECONCILER_APP, Operation, Pattern, Resource, grants, topics_to_ensure
from servicekit.settings import ServiceSettings
from tests.conftest import ROOT


def test_each_service_writes_what_the_catalogue_says_it_publishes_plus_dead_letters_and_reads_its_groups() -> None:
    assert ACCESS["payments"].writes == {  # the commands: a person's acts (a refund blocks first: no IssueRefund)
        Topic.PAYMENTS_EVENTS,
        Topic.LEDGER_COMMANDS,
        Topic.LEDGER_REDRIVES,
        Topic.DEAD_LETTER,
    }
    assert ACCESS["payments"].reads == {Topic.ORDERS_STATUS, Topic.PAYMENTS_COMMANDS, Topic.SUPPORT_CASES}
    assert ACCESS["payments"].groups == ("payments.commands", "payments.order-status", "payments.support-cases")
    assert ACCESS["ledger"].writes == {Topic.LEDGER_EVENTS, Topic.DEAD_LETTER}
    assert ACCESS["ledger"].reads == {Topic.PAYMENTS_EVENTS, Topic.LEDGER_COMMANDS, Topic.LEDGER_REDRIVES}
    assert ACCESS["ledger"].groups == ("ledger.commands", "ledger.payments")
    assert ACCESS["notifier"].writes == {Topic.DEAD_LETTER}
    assert ACCESS["notifier"].reads == {Topic.ORDERS_STATUS, Topic.PAYMENTS_EVENTS}  # OrderExpired: tell the user
    assert ACCESS["notifier"].groups == ("notifier.order-status", "notifier.payments")
    assert ACCESS["reconciler"].writes == {
        Topic.ORDERS_STATUS,
        Topic.LEDGER_COMMANDS,
        Topic.PAYMENTS_COMMANDS,
        Topic.SUPPORT_CASES,
        Topic.DEAD_LETTER,
    }
    assert ACCESS["reconciler"].reads == {Topic.PAYMENTS_EVENTS, Topic.LEDGER_EVENTS}
    for spec in CATALOG:
        for reader in spec.readers:
            assert spec.topic in ACCESS[reader.service].reads and reader.group in ACCESS[reader.service].groups


def test_the_reconciler_owns_the_topics_and_the_group_of_its_faust_app() -> None:
    app = (ROOT / "services/reconciler/src/reconciler/adapters/faust_app.py").read_text()
    assert f'f"{{prefix}}{RECONCILER_APP}"' in app, "faust's app id (its group and topic prefix) changed"
    assert ACCESS["reconciler"].groups == (RECONCILER_APP,)
    assert ACCESS["reconciler"].owns_prefix == f"{RECONCILER_APP}-"


def test_only_the_reconciler_and_payments_support_api_command_and_no_one_reads_the_dead_letters() -> None:
    writers = {t: {p for p, a in ACCESS.items() if t in a.writes} for t in Topic}
    assert writers[Topic.LEDGER_COMMANDS] == {"reconciler", "payments"}
    assert writers[Topic.LEDGER_REDRIVES] == {"payments"}  # a person's re-drive, which may lift the ledger's block
    assert writers[Topic.PAYMENTS_COMMANDS] == {"reconciler"}  # a refund only after the ledger's block
    assert writers[Topic.PAYMENTS_EVENTS] == {"payments"} and writers[Topic.LEDGER_EVENTS] == {"ledger"}
    assert all(Topic.DEAD_LETTER not in a.reads for a in ACCESS.values())


def test_only_payments_may_write_the_redrive_topic_and_the_ledger_reads_it_in_its_commands_group() -> None:
    # A person's re-drive through payments' support API is the one command that may lift the ledger's block on an
    # order: it has a topic of its own, which no other principal may write (the reconciler writes ledger.commands).
    redrives = Topic.LEDGER_REDRIVES
    assert {p for p, a in ACCESS.items() if redrives in a.writes} == {"payments"}
    assert {p for p, a in ACCESS.items() if redrives in a.reads} == {"ledger"}
    assert {(g.principal, g.operation, g.resource, g.pattern) for g in grants() if g.name == redrives.value} == {
        ("payments", Operation.WRITE, Resource.TOPIC, Pattern.LITERAL),
        ("ledger", Operation.READ, Resource.TOPIC, Pattern.LITERAL),
    }
    [spec] = [s for s in CATALOG if s.topic is redrives]
    assert [(r.service, r.group) for r in spec.readers] == [("ledger", "ledger.commands")]
    assert "ledger.commands" in ACCESS["ledger"].groups


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


def test_with_sasl_a_service_ensures_only_the_topics_its_principal_may_see_and_without_it_every_topic() -> None:
    sasl = ServiceSettings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="ledger")
    assert set(topics_to_ensure("ledger", sasl)) == {
        Topic.PAYMENTS_EVENTS,
        Topic.LEDGER_COMMANDS,
        Topic.LEDGER_REDRIVES,
        Topic.LEDGER_EVENTS,
        Topic.DEAD_LETTER,
    }
    assert topics_to_ensure("ledger", ServiceSettings()) == list(Topic)
    assert topics_to_ensure("bench", sasl) == list(Topic)  # no principal of ours: nothing to narrow it to
