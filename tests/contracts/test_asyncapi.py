"""The committed AsyncAPI document: generated from the contracts, valid AsyncAPI 3.0 by the official spec
schema and parser, and true to the records the codec writes."""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from contracts import asyncapi
from contracts.catalog import CATALOG, topic_of
from contracts.codec import encode, envelope_for
from contracts.registry import MODELS
from contracts.schemas import ASYNCAPI_PATH, PACKAGE_DIR
from contracts.topics import Topic
from tests.contracts.test_contracts import payment

HERE = Path(__file__).parent
SAMPLES = HERE / "samples"
TOOLS = HERE / "asyncapi"


@pytest.fixture(scope="module")
def official() -> Path:
    """The official AsyncAPI parser and spec schemas from npm (pinned by tests/contracts/asyncapi's lock file),
    installed once into the cache and reused while the lock file is unchanged."""
    lock = (TOOLS / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("CREDITED_CACHE_DIR", Path.home() / ".cache" / "credited"))
    home = cache / f"asyncapi-{hashlib.sha1(lock).hexdigest()[:12]}"
    if not (home / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        staging = Path(f"{home}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(TOOLS / name, staging / name)
        npm = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(npm, cwd=staging, check=True, timeout=600)
        shutil.rmtree(home, ignore_errors=True)
        try:
            staging.rename(home)
        except OSError:  # another test run finished the same install first
            shutil.rmtree(staging, ignore_errors=True)
    shutil.copy(TOOLS / "validate.mjs", home / "validate.mjs")
    return home


def document() -> dict[str, Any]:
    return json.loads(ASYNCAPI_PATH.read_text())


def parse(official: Path, doc: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(doc))
    out = subprocess.run(
        ["node", str(official / "validate.mjs"), str(path)], check=True, capture_output=True, text=True, timeout=120
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def problems(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Errors (0) and warnings (1); info and hints (such as "3.1.0 exists") are not problems."""
    return [d for d in result["diagnostics"] if d["severity"] <= 1]


def test_the_committed_asyncapi_document_is_generated_from_the_contracts() -> None:
    assert ASYNCAPI_PATH.read_text() == asyncapi.render(), "run: make schemas"


def test_the_drift_check_fails_when_a_contract_changes_without_regenerating(tmp_path: Path) -> None:
    copied = tmp_path / "contracts"
    shutil.copytree(PACKAGE_DIR, copied, ignore=shutil.ignore_patterns("__pycache__"))
    events = copied / "src" / "contracts" / "events.py"
    source = events.read_text()
    anchor = "    provider_txn_id: str = Field(min_length=1, max_length=128)\n    paid_at: UtcDatetime\n"
    assert anchor in source
    events.write_text(source.replace(anchor, anchor + "    loyalty_points: int = 0\n", 1))
    env = {**os.environ, "PYTHONPATH": str(copied / "src")}

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "contracts.schemas", "--check"]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    stale = check()
    assert stale.returncode == 1
    assert "asyncapi.json" in stale.stdout and "PaymentSucceeded.v1.json" in stale.stdout
    subprocess.run([sys.executable, "-m", "contracts.schemas"], env=env, check=True)
    assert check().returncode == 0
    regenerated = json.loads((copied / "asyncapi.json").read_text())["components"]["schemas"]
    assert "loyalty_points" in regenerated["PaymentSucceeded"]["properties"]


def test_the_document_is_valid_asyncapi_3_by_the_official_spec_schema(official: Path) -> None:
    spec = json.loads((official / "node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json").read_text())
    validator = jsonschema_rs.validator_for(spec)
    doc = document()
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = copy.deepcopy(doc)
    broken["operations"]["payments.send.payments.events"]["action"] = "publish"  # AsyncAPI 2 wording
    assert not validator.is_valid(broken)


def test_the_official_parser_reads_the_document_without_errors_or_warnings(official: Path, tmp_path: Path) -> None:
    result = parse(official, document(), tmp_path)
    assert result["parsed"] and problems(result) == []
    dangling = copy.deepcopy(document())
    dangling["components"]["messages"]["PaymentSucceeded"]["payload"] = {"$ref": "#/components/schemas/Nothing"}
    assert problems(parse(official, dangling, tmp_path))


def test_every_contract_message_is_on_exactly_one_topic_with_its_own_message() -> None:
    carried = [m.event_type for spec in CATALOG for m in spec.messages]
    assert sorted(carried) == sorted(MODELS) and len(set(carried)) == len(carried)
    doc = document()
    for spec in CATALOG:
        channel = doc["channels"][asyncapi.channel_id(spec.topic)]
        assert channel["address"] == spec.topic.value
        assert set(channel["messages"]) == {m.event_type for m in spec.messages}
        assert all(set(r.messages) <= set(spec.messages) for r in spec.readers)
    assert {c["address"] for c in doc["channels"].values()} == {t.value for t in Topic}
    assert topic_of(MODELS["PaymentSucceeded"]) is Topic.PAYMENTS_EVENTS


def components_validator(schema: dict[str, Any], doc: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for one schema of the document, its $refs into #/components resolved."""
    root = {"$schema": "http://json-schema.org/draft-07/schema#", **schema, "components": doc["components"]}
    return jsonschema_rs.validator_for(root)


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_every_stored_sample_matches_its_messages_headers_and_payload_schema(sample: Path) -> None:
    stored = json.loads(sample.read_text())
    doc = document()
    message = doc["components"]["messages"][stored["headers"]["event_type"]]
    assert components_validator(message["headers"], doc).is_valid(stored["headers"])
    assert components_validator(message["payload"], doc).is_valid(stored["value"])
    assert components_validator(message["bindings"]["kafka"]["key"], doc).is_valid(stored["value"]["order_id"])


def test_records_the_codec_writes_carry_the_headers_and_key_the_document_describes() -> None:
    doc = document()
    message = doc["components"]["messages"]["PaymentSucceeded"]
    record = encode(payment(), envelope_for(payment(), producer="payments"))
    headers = {k: v.decode() for k, v in record.headers}
    assert components_validator(message["headers"], doc).is_valid(headers)
    assert components_validator(message["bindings"]["kafka"]["key"], doc).is_valid(record.key.decode())
    assert components_validator(message["payload"], doc).is_valid(json.loads(record.value))
    for wrong in ({**headers, "event_type": "CreditPosted"}, {**headers, "schema_version": "2"}):
        assert not components_validator(message["headers"], doc).is_valid(wrong)
    assert set(doc["components"]["schemas"]["EnvelopeHeaders"]["required"]) == set(headers)


def test_python_m_contracts_asyncapi_prints_the_committed_document() -> None:
    out = subprocess.run([sys.executable, "-m", "contracts.asyncapi"], capture_output=True, check=True)
    assert out.stdout.decode() == ASYNCAPI_PATH.read_text()
