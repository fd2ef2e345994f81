# Prometheus and Alertmanager from Debian's packages, for tests/test_docker_compose.py, where
# no registry serves prom/prometheus or prom/alertmanager. Like those images: runs as nobody,
# the binary is the entry point (the compose test sets it per service), data in /prometheus
# and /alertmanager.
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        prometheus prometheus-alertmanager \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /prometheus /alertmanager
USER nobody
