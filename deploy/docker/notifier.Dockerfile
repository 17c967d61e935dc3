# confab-notifier: email, web push and mobile push for unread messages (stream NOTIFIER,
# schema notifier).
# Build from the repository root:
#   docker build -f deploy/docker/notifier.Dockerfile -t confab-notifier:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/confab
# Third-party packages exactly as locked (versions and hashes), then our own without deps.
# requirements.lock is the runtime set only: the embedded backends and the test and
# benchmark tools are in requirements-dev.lock, which no image installs.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY libs/pyproject.toml libs/
COPY libs/confab libs/confab
COPY services/notifier/pyproject.toml services/notifier/
COPY services/notifier/confab_notifier services/notifier/confab_notifier
RUN pip install --no-deps ./libs ./services/notifier

# Listen on every interface inside the container; /healthz and /metrics on 9090.
ENV CONFAB_HTTP_HOST=0.0.0.0 \
    CONFAB_HTTP_PORT=9090 \
    CONFAB_LOG_FORMAT=json
EXPOSE 9090
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
CMD ["confab-notifier"]
