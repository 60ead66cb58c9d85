"""Infrastructure errors are classified once: the real asyncpg exception classes, made from a SQLSTATE as the
driver makes them from a server's error, and the real aiokafka errors."""

import errno
import socket

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from servicekit.errors import Classified, Dependency, Kind, ProducerReplaced, classify, is_transient


def postgres_error(sqlstate: str, message: str = "from the server") -> asyncpg.PostgresError:
    """The exception asyncpg raises for an ErrorResponse with this SQLSTATE (its own constructor)."""
    exc = asyncpg.PostgresError.new({"C": sqlstate, "M": message, "S": "ERROR"})
    assert isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == sqlstate
    return exc


@pytest.mark.parametrize(
    ("sqlstate", "driver_class"),
    [
        ("08000", asyncpg.exceptions.PostgresConnectionError),
        ("08003", asyncpg.exceptions.ConnectionDoesNotExistError),
        ("08006", asyncpg.exceptions.ConnectionFailureError),
        ("53000", asyncpg.exceptions.InsufficientResourcesError),
        ("53100", asyncpg.exceptions.DiskFullError),
        ("53200", asyncpg.exceptions.OutOfMemoryError),
        ("53300", asyncpg.exceptions.TooManyConnectionsError),
        ("25006", asyncpg.exceptions.ReadOnlySQLTransactionError),
        ("57014", asyncpg.exceptions.QueryCanceledError),
        ("57P01", asyncpg.exceptions.AdminShutdownError),
        ("57P02", asyncpg.exceptions.CrashShutdownError),
        ("57P03", asyncpg.exceptions.CannotConnectNowError),
        ("40001", asyncpg.exceptions.SerializationError),
        ("40P01", asyncpg.exceptions.DeadlockDetectedError),
        ("55P03", asyncpg.exceptions.LockNotAvailableError),
        ("58030", asyncpg.exceptions.PostgresIOError),
        ("25P03", asyncpg.exceptions.IdleInTransactionSessionTimeoutError),
    ],
)
def test_a_database_that_is_away_full_read_only_or_busy_is_transient(sqlstate: str, driver_class: type) -> None:
    exc = postgres_error(sqlstate)
    assert type(exc) is driver_class
    verdict = classify(exc)
    assert (verdict.kind, verdict.dependency) == (Kind.TRANSIENT, Dependency.DATABASE)
    assert verdict.reason == f"sqlstate {sqlstate}"


@pytest.mark.parametrize(
    "sqlstate",
    [
        "23505",
        "23503",
        "23514",
        "22P02",
        "22003",
        "42P01",
        "42501",
        "28P01",
        "3D000",
        "0A000",
        "40002",
        "57P04",
        "P0001",
        "XX001",
    ],
)
def test_a_database_that_says_no_to_the_data_or_to_us_is_final(sqlstate: str) -> None:
    assert classify(postgres_error(sqlstate)).kind is Kind.FINAL


def test_a_sqlstate_the_driver_does_not_know_is_judged_by_its_class() -> None:
    in_a_transient_class = postgres_error("53999")
    assert type(in_a_transient_class) is asyncpg.exceptions.UnknownPostgresError
    assert classify(in_a_transient_class).kind is Kind.TRANSIENT
    assert classify(postgres_error("23999")).kind is Kind.FINAL
    assert classify(postgres_error("HV000")).kind is Kind.UNKNOWN


def test_the_drivers_own_connection_errors_are_transient_and_a_bad_value_is_final() -> None:
    assert classify(asyncpg.InterfaceError("connection is closed")).kind is Kind.TRANSIENT
    assert classify(asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation")).kind is Kind.TRANSIENT
    assert classify(asyncpg.exceptions._base.OutdatedSchemaCacheError("cache")).kind is Kind.TRANSIENT
    lost_state = asyncpg.exceptions._base.InternalClientError("cannot switch to state 12; another operation (2)")
    assert classify(lost_state) == Classified(Kind.TRANSIENT, Dependency.DATABASE, "InternalClientError")
    bad_value = asyncpg.exceptions._base.DataError("invalid input for query argument $1")
    assert isinstance(bad_value, asyncpg.InterfaceError)
    assert classify(bad_value).kind is Kind.FINAL


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]"),
        kafka_errors.NodeNotReadyError("node 1"),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NotEnoughReplicasError(),
        kafka_errors.NotEnoughReplicasAfterAppendError(),
        kafka_errors.CoordinatorNotAvailableError(),
        kafka_errors.NotCoordinatorError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.LeaderNotAvailableError(),
        kafka_errors.KafkaStorageError(),
        kafka_errors.NoBrokersAvailable(),
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.BrokerNotAvailableError(),
        kafka_errors.CommitFailedError("the group rebalanced"),
        kafka_errors.RebalanceInProgressError(),
        kafka_errors.UnknownMemberIdError(),
    ],
)
def test_a_broker_that_is_away_moving_leaders_or_rebalancing_is_transient(error: kafka_errors.KafkaError) -> None:
    verdict = classify(error)
    assert (verdict.kind, verdict.dependency) == (Kind.TRANSIENT, Dependency.BROKER)


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.TopicAuthorizationFailedError(),
        kafka_errors.GroupAuthorizationFailedError(),
        kafka_errors.ClusterAuthorizationFailedError(),
        kafka_errors.SaslAuthenticationFailed(),
        kafka_errors.MessageSizeTooLargeError(),
        kafka_errors.RecordTooLargeError(),
        kafka_errors.InvalidTopicError(),
        kafka_errors.UnsupportedVersionError(),
        kafka_errors.ProducerFenced(),
    ],
)
def test_a_broker_that_refuses_us_or_the_record_is_final(error: kafka_errors.KafkaError) -> None:
    assert classify(error).kind is Kind.FINAL


def test_a_kafka_error_neither_retriable_nor_a_known_verdict_is_unknown() -> None:
    assert classify(kafka_errors.UnknownError()).kind is Kind.UNKNOWN  # what Tansu answers InitProducerId with
    assert classify(kafka_errors.IllegalStateError("not assigned")).kind is Kind.UNKNOWN


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        ConnectionResetError(errno.ECONNRESET, "reset by peer"),
        BrokenPipeError(errno.EPIPE, "broken pipe"),
        OSError(errno.EHOSTUNREACH, "no route to host"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed, [Errno 99] Cannot assign"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        TimeoutError(),
    ],
)
def test_sockets_that_nobody_answers_are_transient_and_belong_to_the_named_dependency(error: OSError) -> None:
    assert classify(error).dependency is Dependency.NETWORK
    verdict = classify(error, dependency=Dependency.DATABASE)
    assert (verdict.kind, verdict.dependency) == (Kind.TRANSIENT, Dependency.DATABASE)


def test_a_local_file_problem_or_a_bug_is_not_an_infrastructure_error() -> None:
    assert classify(FileNotFoundError(errno.ENOENT, "no such file")).kind is Kind.UNKNOWN
    assert classify(PermissionError(errno.EACCES, "denied")).kind is Kind.UNKNOWN
    assert classify(KeyError("order_id")).kind is Kind.UNKNOWN
    assert not is_transient(ValueError("bad amount"))


def test_a_wrapper_is_judged_by_the_error_it_was_raised_from_but_not_by_one_it_interrupted() -> None:
    try:
        try:
            raise postgres_error("53100", "could not extend file: No space left on device")
        except asyncpg.PostgresError as exc:
            raise RuntimeError("posting the credit failed") from exc
    except RuntimeError as wrapped:
        assert classify(wrapped).kind is Kind.TRANSIENT
    try:
        try:
            raise postgres_error("57P01")
        except asyncpg.PostgresError:
            raise KeyError("a bug in the except block") from None
    except KeyError as interrupted:
        assert interrupted.__context__ is not None
        assert classify(interrupted).kind is Kind.UNKNOWN


def test_a_group_of_errors_is_transient_only_if_every_one_is() -> None:
    away = [postgres_error("57P01"), kafka_errors.KafkaConnectionError()]
    assert classify(ExceptionGroup("both away", away)).kind is Kind.TRANSIENT
    assert classify(ExceptionGroup("one final", [*away, postgres_error("23505")])).kind is Kind.FINAL
    assert classify(ExceptionGroup("one bug", [*away, ValueError("x")])).kind is Kind.UNKNOWN


@pytest.mark.parametrize(
    "error",
    [
        ProducerReplaced("the producer could not send and was replaced"),
        kafka_errors.OutOfOrderSequenceNumber(),
        kafka_errors.UnknownProducerId(),
    ],
)
def test_a_send_that_failed_for_its_producers_state_is_transient_as_the_publisher_replaces_the_producer(
    error: kafka_errors.KafkaError,
) -> None:
    assert classify(error) == Classified(Kind.TRANSIENT, Dependency.BROKER, type(error).__name__)
