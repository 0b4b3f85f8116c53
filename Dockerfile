# The Cubbi Service (cubbi-server) as a container.  It drives the host's
# Docker engine through the mounted socket: sessions are sibling containers.
#
#   docker build -t monadical/cubbi-service .
#   docker compose up -d          (see docker-compose.yml and the README)
#
# BASE_IMAGE: any Debian bookworm (or later) image.  Where no registry is
# reachable, make one locally and build on it:
#   cubbi-image bootstrap-base        (makes cubbi/base-os:bookworm)
#   docker build --build-arg BASE_IMAGE=cubbi/base-os:bookworm -t monadical/cubbi-service .
# Only Debian's mirror (plain http, for apt) and PyPI (https, for pip) are used.
#
# Extra CA certificates (a TLS-intercepting proxy in front of PyPI): copy
# them into cubbi-ca/ before building, one PEM certificate per *.crt file
# (update-ca-certificates skips a file holding a whole bundle), e.g.
#   cp corp-root.pem cubbi-ca/corp-root.crt
# They are trusted by apt, pip and the server.  This is the folder that
# `cubbi-image build --ca-cert FILE` fills for image definitions; the test
# (tests/test_service_image.py) builds this file the same way.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY cubbi-ca/ /usr/local/share/ca-certificates/cubbi/
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# cubbi with the [server] extra (bottle, gevent, gevent-websocket,
# cryptography: all binary wheels, so no compiler) in a venv; neither the
# source tree nor pip itself is kept (the .pyc files are: a quicker start).
COPY pyproject.toml README.md /src/
COPY bin /src/bin
COPY cubbi_tools /src/cubbi_tools
COPY server /src/server
COPY images /src/images
# man pages and completions: pyproject.toml installs them (data-files)
COPY man /src/man
COPY completions /src/completions
RUN python3 -m venv /opt/cubbi \
 && /opt/cubbi/bin/pip install --no-cache-dir --disable-pip-version-check "/src[server]" \
 && /opt/cubbi/bin/pip uninstall -y -q pip setuptools \
 && rm -rf /src /root/.cache \
 && /opt/cubbi/bin/python -c "import cubbi_server.app, gevent, geventwebsocket, cryptography"
ENV PATH=/opt/cubbi/bin:$PATH \
    CUBBI_SERVER_CONFIG=/app/config/cubbi-service.yaml

# The server runs as the unprivileged user cubbi (uid/gid 10001).  The Docker
# socket is root:docker (mode 0660) on the host, and the docker group's gid
# differs between hosts, so the container must be given that group:
#   docker run --group-add "$(stat -c %g /var/run/docker.sock)" ...
#   (docker-compose.yml: group_add, from DOCKER_GID)
# Without it the server starts, but every call answers 503 (engine
# unreachable: permission denied).  Whoever can use the socket is root on
# the host anyway; the separate user only limits what a flaw in the server
# itself can touch inside this container.
RUN groupadd -g 10001 cubbi \
 && useradd -u 10001 -g cubbi -d /var/lib/cubbi -M -s /usr/sbin/nologin cubbi \
 && mkdir -p /app/config /var/lib/cubbi \
 && chown cubbi:cubbi /var/lib/cubbi
USER cubbi
ENV HOME=/var/lib/cubbi
WORKDIR /var/lib/cubbi
# fail the build, not the container, when the base keeps the server's user
# away from its program (a / of mode 0700 from an import, say)
RUN cubbi-server --help >/dev/null
# users, hashed tokens and projects (SQLite; state.database in the config)
VOLUME ["/var/lib/cubbi"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=4)" || exit 1
# The config (from $CUBBI_SERVER_CONFIG, start from
# server/cubbi-service.example.yaml) sets the port and the database; these
# switches make the container listen on every interface, port 3000.
CMD ["cubbi-server", "serve", "--host", "0.0.0.0", "--port", "3000"]
