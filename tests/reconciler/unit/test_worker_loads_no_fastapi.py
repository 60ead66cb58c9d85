"""The reconciler serves its pages and /metrics with faust's web server and plain ASGI: its worker process does
not load FastAPI, which costs over a second of CPU at every start of every worker."""

import subprocess
import sys


def test_loading_the_reconciler_worker_loads_no_fastapi() -> None:
    probe = "import sys, reconciler.adapters.faust_app; print('fastapi' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
