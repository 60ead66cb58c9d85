"""Topic names. Every message's Kafka key is its order id, so one order's messages stay in order."""

from enum import StrEnum


class Topic(StrEnum):
    """The topics credited's services publish to and consume from."""

    PAYMENTS_EVENTS = "payments.events"
    LEDGER_EVENTS = "ledger.events"
    LEDGER_COMMANDS = "ledger.commands"
    LEDGER_REDRIVES = "ledger.redrives"
    PAYMENTS_COMMANDS = "payments.commands"
    ORDERS_STATUS = "orders.status"
    SUPPORT_CASES = "support.cases"
    DEAD_LETTER = "credited.deadletter"

    def qualified(self, prefix: str = "") -> str:
        """The topic's name on the broker: tests and shared clusters put a prefix in front."""
        return f"{prefix}{self.value}"
