"""One classification of infrastructure errors: is PostgreSQL or Kafka briefly away (wait and retry), has it
said no for good (fail this message now), or is it something else (the caller's own policy)?

A consumer that dead-letters, a reconciler that refunds or a relay that stops because the database was full
for a minute loses money or trust; one that retries forever on a permission error never tells anyone. So the
decision is made once, here, from what the error itself says: PostgreSQL's SQLSTATE (by class, then by code),
aiokafka's `retriable` flag (with Kafka's own exceptions to it), and the network errors beneath both.
"""

import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from aiokafka import errors as kafka_errors


def error_body(code: str, detail: object) -> dict[str, object]:
    """credited's JSON error body: a stable machine-readable code, and what is wrong for people."""
    return {"error": code, "detail": detail}


class Kind(StrEnum):
    """What to do about an error."""

    TRANSIENT = "transient"
    """The dependency is away or busy: back off and try again, without limit; never dead-letter or remediate."""
    FINAL = "final"
    """The dependency answered and will answer the same again: retrying cannot help."""
    UNKNOWN = "unknown"
    """Not an infrastructure error this module knows: the caller's policy decides (a few attempts, then final)."""


class Dependency(StrEnum):
    """Which dependency an error came from, for readiness and logs."""

    DATABASE = "database"
    BROKER = "broker"
    NETWORK = "network"
    """A socket error or timeout that does not say whose it was; a caller that knows passes `dependency`."""


class ConcurrentWrite(Exception):
    """What a unit of work read has changed under it (another instance wrote the same rows first): nothing it
    decided may be kept; a consumer rolls the batch back and retries it."""


class ProducerReplaced(kafka_errors.KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """The producer could no longer send what it was given (its sender task died, or a refused batch left its
    sequence numbers ahead of the broker's) and servicekit.kafka.KafkaPublisher put a fresh one in its place: the
    same records sent again go through. Retriable, so every caller waits and retries rather than give up."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Classified:
    """An error's kind, where it came from, and a short bounded reason (fit for a metric label)."""

    kind: Kind
    dependency: Dependency | None
    reason: str

    @property
    def transient(self) -> bool:
        return self.kind is Kind.TRANSIENT


# PostgreSQL: https://www.postgresql.org/docs/current/errcodes-appendix.html. A code's own entry wins over its
# class's, so a class can be transient with one final code in it (57P04 database_dropped) or the other way round.
_PG_TRANSIENT_CLASSES = frozenset(
    {
        "08",  # connection exception: the server is down, restarting or unreachable
        "53",  # insufficient resources: 53100 disk_full, 53200 out_of_memory, 53300 too_many_connections
        "57",  # operator intervention: 57014 query_canceled, 57P01 admin_shutdown, 57P02/57P03 crash, starting
        "58",  # system error: 58030 io_error, the server's own disk or OS
        "40",  # transaction rollback: 40001 serialization_failure, 40P01 deadlock_detected; the work is redone
    }
)
_PG_TRANSIENT_CODES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a replica promoted or a primary demoted (failover), or read-only mode
        "25P03",  # idle_in_transaction_session_timeout
        "55P03",  # lock_not_available (lock_timeout, NOWAIT)
        "55006",  # object_in_use
        "72000",  # snapshot_too_old
        "XX000",  # internal_error: a server bug that another attempt usually does not meet; never a verdict on data
    }
)
_PG_FINAL_CLASSES = frozenset(
    {
        "0A",  # feature_not_supported
        "22",  # data exception: the values are wrong
        "23",  # integrity constraint violation: the data contradicts a rule
        "28",  # invalid authorization: wrong user or password
        "2B",  # dependent privilege descriptors still exist
        "3D",  # invalid catalog name: no such database
        "3F",  # invalid schema name
        "42",  # syntax error or access rule violation (42501 insufficient_privilege, 42P01 undefined_table)
        "44",  # WITH CHECK OPTION violation
        "P0",  # raised by PL/pgSQL
        "XX",  # XX001 data_corrupted, XX002 index_corrupted (XX000 internal_error is listed as transient)
    }
)
_PG_FINAL_CODES = frozenset(
    {
        "40002",  # transaction_integrity_constraint_violation: a deferred constraint failed at commit
        "57P04",  # database_dropped
    }
)

# Client-side asyncpg errors: the connection went away under us (transient), or our call was wrong (final).
_PG_CLIENT_FINAL: tuple[type[BaseException], ...] = (
    asyncpg.exceptions._base.DataError,  # a value that does not encode for its parameter (not 22000's class)
    asyncpg.exceptions._base.ClientConfigurationError,
    asyncpg.exceptions._base.UnsupportedClientFeatureError,
    asyncpg.exceptions._base.UnsupportedServerFeatureError,
)
_PG_CLIENT_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing", released while in use
    asyncpg.exceptions._base.OutdatedSchemaCacheError,  # a migration changed a type: the statement is prepared anew
    asyncpg.exceptions._base.ProtocolError,
    # The driver's protocol lost its state: PostgreSQL ended the session in the middle of an operation (a failover
    # or a read-only switch terminating sessions), as seen in a chaos run and in sqlalchemy/sqlalchemy#13241. The
    # connection is spoilt (the outbox relay terminates it; the pool's reset fails and drops it); the database is not.
    asyncpg.exceptions._base.InternalClientError,
    asyncpg.exceptions._base.TargetServerAttributeNotMatched,  # asked for a primary, reached a standby
)

# aiokafka's `retriable` follows Kafka's own, but a few errors Kafka's clients retry or rejoin after are marked
# not retriable in aiokafka; and a few are verdicts that retrying never changes.
_KAFKA_TRANSIENT: tuple[type[BaseException], ...] = (
    kafka_errors.KafkaTimeoutError,  # a send or metadata wait ran out of time: the broker is away
    kafka_errors.KafkaUnavailableError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.ReplicaNotAvailableError,
    kafka_errors.StaleLeaderEpochCodeError,
    kafka_errors.ConcurrentTransactions,
    kafka_errors.ReassignmentInProgress,
    kafka_errors.FetchSessionIdNotFound,
    kafka_errors.InvalidFetchSessionEpoch,
    kafka_errors.QuotaViolationError,
    # An idempotent producer's state that the broker no longer agrees with: a batch it refused kept its sequence
    # numbers, or the broker forgot the producer id. KafkaPublisher replaces such a producer after the failure, so
    # the same send through it again goes through (ProducerReplaced, retriable, is what it raises itself).
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.UnknownProducerId,
    # The group moved on while we worked: the partition's new owner redoes the batch from the last commit,
    # our effects are idempotent, so this member rejoins; it is never a reason to dead-letter or stop.
    kafka_errors.CommitFailedError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.UnknownMemberIdError,
)
_KAFKA_FINAL: tuple[type[BaseException], ...] = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
    kafka_errors.InvalidConfigurationError,
    kafka_errors.KafkaConfigurationError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.UnsupportedCodecError,
    kafka_errors.IncompatibleBrokerVersion,
    kafka_errors.ProducerFenced,
    kafka_errors.InvalidProducerEpoch,
    kafka_errors.TransactionCoordinatorFenced,
)

# Socket errors that say "nobody answered" rather than "this is wrong".
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
        errno.EAGAIN,
    }
)


def classify(exc: BaseException, *, dependency: Dependency | None = None) -> Classified:
    """The kind of `exc`; `dependency` names the dependency of an error that does not say (a bare socket error).

    An error that does not classify itself is judged by what it was raised from (`raise ... from exc`), as
    wrappers of socket and driver errors do; not by an error it merely interrupted (`__context__`), or a bug in
    an `except` block handling a transient error would be retried forever."""
    verdicts = [_classify_one(e, dependency) for e in raised_from(exc)]
    for verdict in verdicts:
        if verdict.kind is not Kind.UNKNOWN:
            return verdict
    return verdicts[0]


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means a dependency is briefly away (back off, retry, never give up on the message)."""
    return classify(exc).transient


def raised_from(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from (`__cause__`), and so on, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _classify_one(exc: BaseException, dependency: Dependency | None) -> Classified:
    if isinstance(exc, BaseExceptionGroup):
        return _classify_group(exc, dependency)
    if isinstance(exc, ConcurrentWrite):
        return Classified(Kind.TRANSIENT, Dependency.DATABASE, "concurrent write")
    if isinstance(exc, asyncpg.exceptions.InvalidCachedStatementError):
        # "cached plan must not change result type" after a migration changed a column (SQLSTATE 0A000, a final class):
        # asyncpg has dropped its statement caches, and the same call succeeds when tried again.
        return Classified(Kind.TRANSIENT, Dependency.DATABASE, type(exc).__name__)
    if isinstance(exc, asyncpg.PostgresError):
        return _classify_sqlstate(str(getattr(exc, "sqlstate", "") or ""))
    if isinstance(exc, _PG_CLIENT_FINAL):
        return Classified(Kind.FINAL, Dependency.DATABASE, type(exc).__name__)
    if isinstance(exc, _PG_CLIENT_TRANSIENT):
        return Classified(Kind.TRANSIENT, Dependency.DATABASE, type(exc).__name__)
    if isinstance(exc, kafka_errors.KafkaError):
        return _classify_kafka(exc)
    if isinstance(exc, TimeoutError):
        return Classified(Kind.TRANSIENT, dependency or Dependency.NETWORK, "timeout")
    # A name that does not resolve (gaierror) is a container or host being replaced, as often as a typo.
    passing = isinstance(exc, ConnectionError | socket.gaierror)
    if passing or (isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS):
        return Classified(Kind.TRANSIENT, dependency or Dependency.NETWORK, type(exc).__name__)
    if isinstance(exc, OSError) and exc.errno is None and not isinstance(exc, FileNotFoundError | PermissionError):
        # asyncio and uvloop raise bare OSErrors ("Multiple exceptions: [Errno 111] ...") when every address
        # of a host refused the connection.
        return Classified(Kind.TRANSIENT, dependency or Dependency.NETWORK, "OSError")
    return Classified(Kind.UNKNOWN, dependency, type(exc).__name__)


def _classify_sqlstate(code: str) -> Classified:
    reason = f"sqlstate {code or 'none'}"
    if code in _PG_TRANSIENT_CODES:
        return Classified(Kind.TRANSIENT, Dependency.DATABASE, reason)
    if code in _PG_FINAL_CODES:
        return Classified(Kind.FINAL, Dependency.DATABASE, reason)
    if code[:2] in _PG_TRANSIENT_CLASSES:
        return Classified(Kind.TRANSIENT, Dependency.DATABASE, reason)
    if code[:2] in _PG_FINAL_CLASSES:
        return Classified(Kind.FINAL, Dependency.DATABASE, reason)
    return Classified(Kind.UNKNOWN, Dependency.DATABASE, reason)


def _classify_kafka(exc: kafka_errors.KafkaError) -> Classified:
    reason = type(exc).__name__
    if isinstance(exc, _KAFKA_FINAL):
        return Classified(Kind.FINAL, Dependency.BROKER, reason)
    if exc.retriable or isinstance(exc, _KAFKA_TRANSIENT):
        return Classified(Kind.TRANSIENT, Dependency.BROKER, reason)
    return Classified(Kind.UNKNOWN, Dependency.BROKER, reason)


def _classify_group(group: BaseExceptionGroup[BaseException], dependency: Dependency | None) -> Classified:
    """A group (asyncio.TaskGroup) is final if any member is, transient only if every member is."""
    members = [classify(e, dependency=dependency) for e in group.exceptions]
    for kind in (Kind.FINAL, Kind.UNKNOWN):
        for member in members:
            if member.kind is kind:
                return member
    return members[0]


def log_failed_round(log: logging.Logger, what: str, exc: BaseException, retry_s: float, *, away: bool = False) -> None:
    """Log a round of a periodic task that failed and is tried again in `retry_s`: with its traceback when it is a
    bug, as a warning when a dependency is away (`away` for an error of the task's own that says so)."""
    if classify(exc).dependency is None and not away:
        log.error("%s failed (a bug, not a dependency away); trying again in %.1fs", what, retry_s, exc_info=exc)
    else:
        log.warning("%s could not run, retrying in %.1fs: %r", what, retry_s, exc)
