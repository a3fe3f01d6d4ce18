# The tradeplane image: every process (`tradeplane <cmd>`) and the operator
# (`tradeplane-operator`).
#
# The build needs no network: it installs from a wheelhouse made outside the image
# (`make wheelhouse`, tools/wheelhouse.py: the project's wheel and every pinned dependency
# in build/wheelhouse/), so the same build works behind an air gap and gives the same
# versions as the tests ran with. `make image` does both steps; skaffold.yaml runs the
# first as a hook.
#
# BASE is any Debian-like image with Python 3.11, `python3 -m venv` and useradd: by default
# python:3.11-slim; CI builds on a debootstrapped Debian bookworm (its python3 is 3.11),
# since no registry is reachable there (tests/e2e/test_image.py).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
# The dependencies first (every wheel of build/wheelhouse/deps, at the pinned versions):
# a change to our code alone reuses this layer.
COPY constraints.txt /src/constraints.txt
COPY build/wheelhouse/deps /src/deps
RUN python3 -m venv /opt/tradeplane \
 && /opt/tradeplane/bin/pip install --no-index --find-links /src/deps \
      -c /src/constraints.txt /src/deps/*.whl
COPY build/wheelhouse/tradeplane-*.whl /src/
# pip compiles what it installs: no bytecode is written at run time (read-only root).
RUN /opt/tradeplane/bin/pip install --no-index --no-deps /src/tradeplane-*.whl \
 && /opt/tradeplane/bin/pip check

FROM ${BASE}
# The chart runs pods as 10001 with a read-only root filesystem: no bytecode written at
# run time (pip compiled it above), unbuffered JSON logs on stderr.
ENV PATH=/opt/tradeplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 tradeplane \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tradeplane
COPY --from=build /opt/tradeplane /opt/tradeplane
WORKDIR /tmp
# Numeric, so that the kubelet can check runAsNonRoot against it.
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT []
CMD ["tradeplane", "--help"]
