# glyph-exporter and glyph-remediator, one image for both (docker-compose.yml gives each service
# its command). Only the package and its runtime dependencies: no stand-in, no test extras.
# BASE: any Debian-like image with python3 and its venv module (the tests build from a
# debootstrap base, as no registry is reachable there).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/glyph-guard/bin:$PATH

# A fixed uid/gid, so that host files the services read (the token) can be granted to it.
RUN groupadd --system --gid 10001 glyph \
    && useradd --system --uid 10001 --gid glyph --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin glyph \
    && install -d -o glyph -g glyph -m 0750 /var/lib/glyph-guard /var/log/glyph-guard \
    && python3 -m venv /opt/glyph-guard

# Behind a private package index or mirror: --build-arg PIP_INDEX_URL=... (or PIP_FIND_LINKS
# with PIP_NO_INDEX=1). Build-time only; they do not stay in the image's environment.
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY exporter ./exporter
COPY remediator ./remediator
COPY fleet ./fleet
COPY deploy/prometheus ./deploy/prometheus
COPY deploy/grafana/dashboards ./deploy/grafana/dashboards
RUN pip install . && rm -rf /src /root/.cache

WORKDIR /
USER 10001:10001
EXPOSE 9842 9843
# The exporter by default; the remediator's service runs `glyph-remediator --config ...`.
CMD ["glyph-exporter", "--config", "/etc/glyph-guard/glyph.yaml"]

