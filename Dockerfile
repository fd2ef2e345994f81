# glyph-exporter and glyph-remediator, one image for both (docker-compose.yml gives each service
# its command). Only the package and its runtime dependencies: no test or development extras.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so that host files the services read (the token) can be granted to it.
RUN groupadd --system --gid 10001 glyph \
    && useradd --system --uid 10001 --gid glyph --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin glyph \
    && install -d -o glyph -g glyph -m 0750 /var/lib/glyph-guard /var/log/glyph-guard

WORKDIR /src
COPY pyproject.toml README.md ./
COPY glyph_common ./glyph_common
COPY glyph_stack ./glyph_stack
COPY exporter ./exporter
COPY remediator ./remediator
COPY standin ./standin
RUN pip install . && rm -rf /src /root/.cache

WORKDIR /
USER 10001:10001
EXPOSE 9842 9843
# The exporter by default; the remediator's service runs `glyph-remediator --config ...`.
CMD ["glyph-exporter", "--config", "/etc/glyph-guard/glyph.yaml"]
