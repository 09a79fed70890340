# eventpipe in a container:
#
#   docker build -t eventpipe .
#   docker run -d --name eventpipe --restart unless-stopped --stop-timeout 45 \
#       -p 8080:8080 -p 127.0.0.1:9100:9100 \
#       -v eventpipe-spool:/var/lib/eventpipe --env-file eventpipe.env eventpipe
#
# The spool is a volume: what it holds survives the container and ships at
# the next start.  Metrics are published on the host's loopback only (they
# say where events go); the health check follows EVENTPIPE_METRICS.
# --stop-timeout must exceed --shutdown-timeout (30 s) so a stop can ship
# the last batch.  SIGHUP reads an --env-file (or EVENTPIPE_ENV_FILE) again;
# docker --env-file values are fixed for the container's life.
# The man page, eventpipe(1), built from the manual (docs/) with Sphinx in a
# stage of its own: the image gets the page, not Sphinx.
FROM python:3.12-slim AS manual
WORKDIR /build
COPY pyproject.toml setup.cfg README.rst LICENSE ./
COPY eventpipe ./eventpipe
COPY twisted ./twisted
COPY docs ./docs
RUN pip install --no-cache-dir . "sphinx==9.0.4" \
    && sphinx-build -q -W -b man docs /man

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml setup.cfg README.rst LICENSE ./
COPY eventpipe ./eventpipe
COPY twisted ./twisted
# The plugin cache is written here, as root: at run time twistd then finds
# its plugins without importing every one of them (and their TLS libraries).
RUN pip install --no-cache-dir . \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && rm -rf /build \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/eventpipe --create-home eventpipe \
    && chmod 0700 /var/lib/eventpipe

COPY --from=manual /man/eventpipe.1 /usr/local/share/man/man1/eventpipe.1

USER 10001:10001
WORKDIR /var/lib/eventpipe
ENV EVENTPIPE_SPOOL_DIR=/var/lib/eventpipe/spool \
    EVENTPIPE_METRICS=tcp:9100
VOLUME ["/var/lib/eventpipe"]
EXPOSE 8080 9100

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, re, sys, urllib.request\nfound = re.search(r'tcp6?:(\\d+)', os.environ.get('EVENTPIPE_METRICS') or '')\nif not found:\n    sys.exit('health check: EVENTPIPE_METRICS is off or not tcp:PORT: nothing to ask')\ntry:\n    urllib.request.urlopen(f'http://127.0.0.1:{found.group(1)}/healthz', timeout=4)\nexcept Exception as error:\n    sys.exit(f'health check: /healthz on port {found.group(1)} does not answer: {error}')\n"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "--logger=eventpipe.logs.json", "eventpipe"]
