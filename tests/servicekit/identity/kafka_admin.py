"""The test SASL broker's principals, and servicekit.kafka_access's grants applied through the admin API
(confluent-kafka) as the super user."""

import time
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from servicekit.kafka_access import Grant, Pattern, Resource
from servicekit.kafka_security import aiokafka_security
from servicekit.settings import ServiceSettings


@dataclass(frozen=True)
class SaslBroker:
    """A running SASL broker and the password of each SCRAM user on it."""

    bootstrap: str
    passwords: dict[str, str]

    def settings(self, principal: str, password: str | None = None) -> ServiceSettings:
        return ServiceSettings(
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=principal,
            kafka_sasl_password=SecretStr(password or self.passwords[principal]),
        )

    def client(self, principal: str) -> dict[str, object]:
        return aiokafka_security(self.settings(principal))


_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP}
_PATTERN = {Pattern.LITERAL: ResourcePatternType.LITERAL, Pattern.PREFIXED: ResourcePatternType.PREFIXED}


def apply_grants(bootstrap: str, admin_password: str, grants: list[Grant]) -> None:
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": admin_password,
        }
    )
    bindings = [
        AclBinding(
            _RESOURCE[g.resource],
            g.name,
            _PATTERN[g.pattern],
            f"User:{g.principal}",
            "*",
            AclOperation[g.operation.name],
            AclPermissionType.ALLOW,
        )
        for g in grants
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=60)
    # The controller has them; the broker applies them from the metadata log a moment later.
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    deadline = time.monotonic() + 30
    while not set(bindings) <= set(admin.describe_acls(everything, request_timeout=10).result(timeout=20)):
        assert time.monotonic() < deadline, "the broker did not apply the ACLs within 30 s"
        time.sleep(0.1)
