"""PermanentFailure: how a handler refuses a message for good. No I/O library here, so domain handlers may raise it."""

import re

_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")


class PermanentFailure(Exception):
    """A message that can never be handled (it violates a rule); it goes to the dead-letter topic with `str(self)`
    as its reason (the label, when the reason is blank), and is counted by `label`, a short snake_case name from a
    small fixed set (a metric label: never an order id)."""

    def __init__(self, reason: str, *, label: str = "rule_violated") -> None:
        if not _LABEL.fullmatch(label):
            raise ValueError(f"not a bounded metric label: {label!r}")
        super().__init__(reason.strip() or label)  # a dead letter always says why: its label at least
        self.label = label
