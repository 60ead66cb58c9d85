import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicekit.signatures import SignatureError, parse, sign, verify

BODY = b'{"order_id":"ord_1","status":"succeeded"}'
NOW = 1_800_000_000


def code_of(header: str | None, body: bytes = BODY, secrets: tuple[str, ...] = ("s1",), now: float = NOW) -> str:
    try:
        verify(header, body, secrets, now)
    except SignatureError as exc:
        return exc.code
    return "ok"


def test_a_correct_signature_verifies_and_returns_its_timestamp() -> None:
    assert verify(sign("s1", BODY, NOW), BODY, ["s1"], NOW) == NOW


def test_one_tampered_byte_of_the_body_is_a_mismatch() -> None:
    tampered = BODY.replace(b"ord_1", b"ord_2")
    assert code_of(sign("s1", BODY, NOW), body=tampered) == "signature_mismatch"


def test_a_wrong_secret_is_a_mismatch() -> None:
    assert code_of(sign("other", BODY, NOW)) == "signature_mismatch"


@pytest.mark.parametrize(
    "header", ["", "t=1", "v1=ab", "t=abc,v1=" + "0" * 64, "t=1,v1=" + "g" * 64, "t=1;v1=" + "0" * 64]
)
def test_malformed_headers_are_refused_as_malformed(header: str) -> None:
    assert code_of(header) in {"signature_malformed", "signature_missing"}


def test_signatures_older_or_newer_than_300_seconds_are_refused() -> None:
    assert code_of(sign("s1", BODY, NOW - 301)) == "signature_expired"
    assert code_of(sign("s1", BODY, NOW + 301)) == "signature_from_future"
    assert code_of(sign("s1", BODY, NOW - 300)) == "ok"
    assert code_of(sign("s1", BODY, NOW + 300)) == "ok"


def test_every_active_secret_verifies_during_rotation() -> None:
    assert code_of(sign("old", BODY, NOW), secrets=("new", "old")) == "ok"
    assert code_of(sign("new", BODY, NOW), secrets=("new", "old")) == "ok"
    assert code_of(sign("retired", BODY, NOW), secrets=("new", "old")) == "signature_mismatch"


@given(st.text(alphabet=string.printable + "éü中", max_size=120))
def test_the_header_parser_raises_only_its_declared_error(header: str) -> None:
    try:
        timestamp, digest = parse(header)
    except SignatureError as exc:
        assert exc.code == "signature_malformed"
    else:
        assert timestamp >= 0 and len(digest) == 64


@given(st.binary(max_size=300), st.text(max_size=80))
def test_verify_on_arbitrary_input_either_passes_or_raises_a_signature_error(body: bytes, header: str) -> None:
    assert code_of(header, body=body) in {
        "signature_missing",
        "signature_malformed",
        "signature_expired",
        "signature_from_future",
        "signature_mismatch",
    }
