# The Cubbi Service (cubbi-server) as a container.  It drives the host's
# Docker engine through the mounted socket: sessions are sibling containers.
#
#   docker build -t monadical/cubbi-service .
#   docker compose up -d          (see docker-compose.yml, server/README.md)
#
# BASE can name any Debian-based image with Python 3.11+ (e.g. one made
# locally with cubbi-image bootstrap-base, where no registry is reachable).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CUBBI_SERVER_CONFIG=/app/config/cubbi-service.yaml
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bin ./bin
COPY cubbi_tools ./cubbi_tools
COPY server ./server
RUN python3 -m pip install --no-cache-dir ".[server]" && rm -rf /src \
    && mkdir -p /app/config /var/lib/cubbi
WORKDIR /var/lib/cubbi
VOLUME ["/var/lib/cubbi"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=4)" || exit 1
# The config's state.database is relative to the config file; the example
# config puts it on the /var/lib/cubbi volume.
CMD ["cubbi-server", "serve", "--host", "0.0.0.0", "--port", "3000"]
