"""The ports the local stack (`credited up`, `credited demo`) serves on, and where its clients find it. Apart
from credited.stack.local so a client (`credited order`) knows them without loading the stack's code."""

DEFAULT_PORTS = {"payments": 8101, "ledger": 8102, "reconciler": 8103, "notifier": 8104}
