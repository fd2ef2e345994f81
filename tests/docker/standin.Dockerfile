# The stand-in Glyph service (glyph-guard-demo) on the glyph-guard image, as the `glyph`
# container of tests/deploy/test_docker_compose.py. Build context: the repository root.
ARG GUARD_IMAGE=glyph-guard:0.1.0
FROM ${GUARD_IMAGE}
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST
USER 0:0
WORKDIR /src
COPY demo/pyproject.toml ./demo/
COPY demo/glyph_guard_demo ./demo/glyph_guard_demo
RUN pip install ./demo && rm -rf /src /root/.cache
WORKDIR /
CMD ["glyph-standin"]
