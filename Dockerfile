# The tradeplane image: every process (`tradeplane <cmd>`) and the operator
# (`tradeplane-operator`). Built by skaffold (skaffold.yaml) or `docker build .`.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# gcc builds the compiled order book (setup.py; the image has the Python headers). Only
# this stage has it: the runtime stage gets the built module with the venv.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
# Dependencies first (pinned by constraints.txt), so a source change reuses this layer.
COPY pyproject.toml constraints.txt README.md setup.py ./
COPY services ./services
COPY operator ./operator
RUN python -m venv /opt/tradeplane \
 && /opt/tradeplane/bin/pip install -c constraints.txt . \
 && /opt/tradeplane/bin/python -m compileall -q /opt/tradeplane

FROM python:3.11-slim

# The chart runs pods as 10001 with a read-only root filesystem: no bytecode written at
# run time (it was compiled above), unbuffered JSON logs on stderr.
ENV PATH=/opt/tradeplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 tradeplane \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tradeplane
COPY --from=build /opt/tradeplane /opt/tradeplane
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 9100
ENTRYPOINT []
CMD ["tradeplane", "--help"]
