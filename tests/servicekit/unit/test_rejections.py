"""PermanentFailure: the reason a dead letter carries and the label it is counted by."""

import pytest

from servicekit.rejections import PermanentFailure


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_a_refusal_with_a_blank_reason_still_says_why_by_its_label(blank: str) -> None:
    refused = PermanentFailure(blank, label="refund_mismatch")
    assert str(refused) == "refund_mismatch"


def test_a_refusal_carries_its_reason_as_given_and_is_counted_by_its_label() -> None:
    refused = PermanentFailure("refund of 601 is above the 600 paid", label="above_amount_paid")
    assert (str(refused), refused.label) == ("refund of 601 is above the 600 paid", "above_amount_paid")


@pytest.mark.parametrize("label", ["", "Refund", "ord_" + "x" * 40, "order 1"])
def test_a_label_that_could_blow_up_a_metric_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="not a bounded metric label"):
        PermanentFailure("why", label=label)
