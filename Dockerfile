# The one image of credited's four services; the command picks the service: `python -m payments`,
# `python -m ledger`, `python -m reconciler` or `python -m notifier` (see docker-compose.yml).
#
#   docker build -t credited .

# ---- builder: the pinned runtime dependencies in a virtualenv --------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml requirements.lock ./
# requirements.lock pins every package (it was compiled with the dev, bench and local extras); the services
# need only the project's runtime dependencies at those pinned versions. The embedded broker and PostgreSQL of
# the laptop stack are the `local` extra, never a server's, so the image has neither.
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
    > runtime-requirements.txt
# Wheels wherever they exist; the few pure-Python sdists (http-ece) build without a compiler, and one that
# needed a compiler would fail here: there is none in either stage.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --prefer-binary -c requirements.lock -r runtime-requirements.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y pip setuptools

# ---- runtime: slim Python, the venv, the code, a user without privileges ---------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app/packages/contracts/src:/app/packages/servicekit/src:/app/services/payments/src:/app/services/ledger/src:/app/services/reconciler/src:/app/services/notifier/src

RUN groupadd --system --gid 10001 credited \
    && useradd --system --uid 10001 --gid credited --home-dir /app --no-create-home --shell /usr/sbin/nologin credited \
    && mkdir -p /var/lib/credited/reconciler \
    && chown -R credited:credited /var/lib/credited

COPY --from=builder /opt/venv /opt/venv
# The source tree keeps the repository's layout: each bootstrap.py finds its SQL migrations at
# Path(__file__).parents[2] / "migrations", i.e. /app/services/<name>/migrations.
WORKDIR /app
COPY packages/contracts/src /app/packages/contracts/src
COPY packages/servicekit/src /app/packages/servicekit/src
COPY services/payments /app/services/payments
COPY services/ledger /app/services/ledger
COPY services/reconciler /app/services/reconciler
COPY services/notifier /app/services/notifier

USER credited:credited
ENV RECONCILER_DATA_DIR=/var/lib/credited/reconciler
EXPOSE 8101 8102 8103 8104
CMD ["python", "-m", "payments"]
