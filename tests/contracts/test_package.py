"""`contracts` installs on its own (packages/contracts, hatchling, only pydantic) into a fresh virtualenv and
works there: nothing of the services, the service kit or their libraries comes with it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.schemas import ASYNCAPI_PATH, PACKAGE_DIR

ROOT = PACKAGE_DIR.parents[1]
SAMPLE = Path(__file__).parent / "samples" / "PaymentSucceeded.v1.json"

# Run inside the throwaway venv: decode a stored record, then report what got imported and installed.
PROBE = """
import importlib.metadata as md, json, sys
from contracts import decode
stored = json.load(open(sys.argv[1]))
headers = [(k, v.encode()) for k, v in stored["headers"].items()]
message, envelope = decode(json.dumps(stored["value"]).encode(), headers)
print(json.dumps({
    "decoded": type(message).__name__, "order_id": message.order_id, "producer": envelope.producer,
    "requires": md.requires("credited-contracts"),
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with `packages/contracts` installed and nothing else, by uv (the installer `make venv`
    uses: pip took 45 s of CI's 30 minutes here, uv a few); pydantic at the version the repository locks, so the
    generated document can be compared byte for byte."""
    home = tmp_path_factory.mktemp("contracts-venv")
    uv = str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(home)], check=True, timeout=120)
    install = [uv, "pip", "install", "-q", "--python", str(home / "bin" / "python")]
    subprocess.run([*install, "-c", str(ROOT / "requirements.lock"), str(PACKAGE_DIR)], check=True, timeout=600)
    return home


def test_the_package_installs_alone_and_decodes_a_record_without_any_service_dependency(venv: Path) -> None:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, str(SAMPLE)], check=True, capture_output=True, text=True
    )
    seen = json.loads(out.stdout)
    assert (seen["decoded"], seen["order_id"], seen["producer"]) == ("PaymentSucceeded", "ord_sample", "sample")
    assert sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in seen["requires"]) == [
        "iso4217",
        "pydantic",
    ]
    ours = {"servicekit", "credited", "payments", "ledger", "reconciler", "notifier"}
    libraries = {"orjson", "aiokafka", "asyncpg", "faust", "fastapi", "httpx", "prometheus_client", "babel"}
    assert not (ours | libraries) & set(seen["modules"])
    assert not {"credited", "orjson", "aiokafka", "asyncpg", "faust-streaming", "fastapi"} & set(seen["installed"])


def test_the_installed_package_generates_the_committed_asyncapi_document(venv: Path) -> None:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "contracts.asyncapi"], check=True, capture_output=True)
    assert out.stdout.decode() == ASYNCAPI_PATH.read_text()
