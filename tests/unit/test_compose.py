"""compose.yaml, the Dockerfile and docs/configuration.md agree with the code.

No Docker engine is needed: the compose file is parsed with PyYAML, every
``dunning ...`` command in it is parsed by the real CLI (and its ``--help`` is
read), its environment is fed to the real ``load_settings``, and its HTTP
healthchecks are run against real servers on the loopback. Secrets must have no
default and published ports must stay on the loopback unless told otherwise. Only
``docker compose config -q`` needs the Docker CLI's compose plugin; that one
check is skipped, with the reason, where the plugin is missing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from sqlalchemy.engine import make_url
from typer.main import get_command
from typer.testing import CliRunner

from dunning.cli import app
from dunning.runtime import Tuning
from dunning.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
SOURCES = ROOT / "src" / "dunning"

#: Services built from this repository's Dockerfile (entrypoint ``dunning``).
DUNNING_SERVICES = {"migrate", "scheduler", "worker", "serve", "sandbox"}
#: Contract section 3 variables a containerised deployment must set explicitly.
REQUIRED_ENV = {
    "DUNNING_DATABASE_URL",
    "DUNNING_REDIS_URL",
    "DUNNING_SMTP_URL",
    "DUNNING_BILLING_URL",
    "DUNNING_BILLING_SECRET",
    "DUNNING_INGEST_SECRET",
    "DUNNING_LINK_SECRET",
    "DUNNING_PUBLIC_URL",
    "DUNNING_OPS_TOKEN",
}
#: Secrets: compose must refuse to start without each (``${VAR:?reason}``), never fall back to a default.
SECRETS = {
    "DUNNING_INGEST_SECRET",
    "DUNNING_LINK_SECRET",
    "DUNNING_BILLING_SECRET",
    "DUNNING_OPS_TOKEN",
    "POSTGRES_PASSWORD",
}
#: What an operator's `.env` gives the tests' interpolation (each secret set, as compose requires).
ENV = {name: f"{name.lower().replace('_', '-')}-0123456789abcdef" for name in SECRETS} | {
    "POSTGRES_PASSWORD": "0123456789abcdef0123"
}
#: Services published only on the loopback, whatever DUNNING_BIND says: they have no authentication.
LOOPBACK_ONLY = {"redis", "mailpit", "sandbox"}
RESTART_POLICIES = {"no", "always", "unless-stopped", "on-failure"}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


# ---------------------------------------------------------------------------
# Helpers


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``$$``), as ``up`` sees it."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        current = env.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?"):
            if not current and (op == ":?" or current is None):
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return current or ""
        if op in (":+", "+"):
            return arg if current else ""
        return current or ""

    return INTERPOLATION.sub(sub, value)


def _environment(service: dict[str, Any], env: dict[str, str] = ENV) -> dict[str, str]:
    """A service's environment as its container sees it, with ``env`` as the operator's variables."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate(str(v), env) for k, v in raw.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), "write dunning commands in exec (list) form"
    return [str(part) for part in command]


def _is_group(command: Any) -> bool:
    # Typer vendors its own click: test for the group interface, not a click class.
    return hasattr(command, "commands") and hasattr(command, "get_command")


def _resolve(args: list[str]) -> tuple[list[str], Any, list[str]]:
    """Split ``args`` into the command path (``["db", "upgrade"]``), its command object, and the rest."""
    command: Any = get_command(app)
    path: list[str] = []
    rest = list(args)
    while _is_group(command) and rest and not rest[0].startswith("-"):
        sub = command.get_command(typer.Context(command), rest[0])
        assert sub is not None, f"`dunning {' '.join([*path, rest[0]])}`: no such command"
        command, path = sub, [*path, rest.pop(0)]
    assert not _is_group(command), f"`dunning {' '.join(path)}` needs a subcommand"
    return path, command, rest


def _options(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-")]


def _seconds(duration: str | int | float) -> float:
    """A compose duration (``90s``, ``1m30s``, ``500ms``) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _actor_time_limit_s() -> float:
    """The actors' time limit (importing the broker package starts nothing)."""
    from dunning.broker.setup import TIME_LIMIT_MS

    return TIME_LIMIT_MS / 1000


def recognised_variables() -> set[str]:
    """Every ``DUNNING_*`` variable the code reads: ``env.get("X")``, ``os.environ["X"]``, Tuning fields."""
    names: set[str] = set()
    for path in SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key: ast.expr | None = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if node.func.attr in ("get", "getenv", "pop"):
                    key = node.args[0]
            elif isinstance(node, ast.Subscript):
                key = node.slice
            if isinstance(key, ast.Constant) and str(key.value).startswith("DUNNING_"):
                names.add(str(key.value))
    names |= {f"DUNNING_TUNING_{name.upper()}" for name in Tuning().__dict__}
    return names


def _healthcheck_code(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


def _run_healthcheck(code: str, port: int) -> int:
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode


# ---------------------------------------------------------------------------
# Services, restart policies, healthchecks


def test_the_stack_has_the_expected_services() -> None:
    services = _services()
    assert {"redis", "postgres", "mailpit"} | DUNNING_SERVICES <= set(services)
    for name, service in services.items():
        built_here = "build" in service
        assert built_here == (name in DUNNING_SERVICES), f"{name}: only dunning services build the image"
        assert service.get("image"), f"{name}: no image"


def test_every_service_has_a_restart_policy() -> None:
    for name, service in _services().items():
        policy = service.get("restart")
        # An unquoted `no` is YAML's false: compose would reject it.
        assert isinstance(policy, str), f"{name}: restart must be a quoted string, got {policy!r}"
        assert policy.split(":")[0] in RESTART_POLICIES, f"{name}: unknown restart policy {policy!r}"
    services = _services()
    assert services["migrate"]["restart"] == "no", "migrate is a one-shot"
    for name in ("scheduler", "worker", "serve", "sandbox", "redis", "postgres", "mailpit"):
        # Dramatiq stops the whole pool when one process dies: the restart policy is the supervisor.
        assert services[name]["restart"] == "unless-stopped", name


def test_long_running_services_have_a_healthcheck_or_a_documented_reason() -> None:
    for name, service in _services().items():
        if service["restart"] == "no":
            continue
        check = service.get("healthcheck")
        reason = service.get("x-no-healthcheck")
        if check is None:
            assert isinstance(reason, str) and len(reason.split()) >= 10, (
                f"{name}: no healthcheck and no `x-no-healthcheck` reason"
            )
            continue
        assert reason is None, f"{name}: has both a healthcheck and a reason not to have one"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, (name, test)


def test_infrastructure_services_are_configured_as_documented() -> None:
    services = _services()
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert any(v.endswith(":/data") for v in redis["volumes"]), "Redis's AOF must be on a volume"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    mailpit = services["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit")
    assert any(str(p).endswith("8025:8025") for p in mailpit["ports"])

    named = set(_compose().get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in named, f"{name}: volume {source!r} is not declared"


# ---------------------------------------------------------------------------
# The dunning commands in compose exist, with these options and values


@pytest.mark.parametrize("name", sorted(DUNNING_SERVICES))
def test_compose_command_is_a_real_cli_command(name: str) -> None:
    args = _command(_services()[name])
    path, command, rest = _resolve(args)
    # Parsed (types, ranges, unknown options) by the real command, without running it.
    with command.make_context(f"dunning {' '.join(path)}", list(rest)):
        pass
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    help_text = ANSI.sub("", result.output)
    for option in _options(rest):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
            f"`dunning {' '.join(path)} --help` does not list {option}"
        )


def test_the_cli_rejects_what_compose_must_not_contain() -> None:
    """The two checks above are not vacuous: a typo'd command or option fails them."""
    with pytest.raises(AssertionError, match="no such command"):
        _resolve(["wrker"])
    _, command, rest = _resolve(["worker", "--proceses", "2"])
    with pytest.raises(Exception, match="proceses") as info, command.make_context("dunning worker", rest):
        pass
    assert "UsageError" in {cls.__name__ for cls in type(info.value).__mro__}
    _, command, rest = _resolve(["worker", "--processes", "0"])
    with pytest.raises(typer.BadParameter), command.make_context("dunning worker", rest):
        pass
    with pytest.raises(AssertionError, match="needs a subcommand"):
        _resolve(["dlq"])


def test_worker_scheduler_and_serve_commands() -> None:
    services = _services()
    assert _command(services["migrate"]) == ["db", "upgrade"]
    assert _command(services["scheduler"]) == ["scheduler"]
    assert _command(services["worker"]) == ["worker", "--processes", "2", "--threads", "8"]
    serve = _command(services["serve"])
    assert serve[0] == "serve"
    assert serve[serve.index("--host") + 1] == "0.0.0.0", "in a container, 127.0.0.1 is unreachable"
    port = serve[serve.index("--port") + 1]
    assert port in [str(p).rsplit(":", 1)[-1] for p in services["serve"]["ports"]], "container port"
    sandbox = _command(services["sandbox"])
    assert sandbox[sandbox.index("--host") + 1] == "0.0.0.0"


def test_worker_stops_more_slowly_than_its_longest_message() -> None:
    """On SIGTERM the workers finish what they run; Docker's SIGKILL must not come first."""
    grace = _seconds(_services()["worker"]["stop_grace_period"])
    assert grace > _actor_time_limit_s(), (grace, _actor_time_limit_s())


# ---------------------------------------------------------------------------
# Start order


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "use the long depends_on form, with conditions"
    return {name: spec["condition"] for name, spec in deps.items()}


def test_migrate_runs_before_every_process_that_uses_the_database() -> None:
    services = _services()
    assert _depends(services["migrate"]) == {"postgres": "service_healthy"}
    for name in ("scheduler", "worker", "serve"):
        deps = _depends(services[name])
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("redis") == "service_healthy", name


def test_the_dependency_graph_has_no_cycle_and_names_real_services() -> None:
    services = _services()
    seen: dict[str, str] = {}

    def visit(name: str) -> None:
        assert name in services, f"depends_on names unknown service {name!r}"
        state = seen.get(name)
        assert state != "visiting", f"dependency cycle through {name}"
        if state == "done":
            return
        seen[name] = "visiting"
        for dep in _depends(services[name]):
            visit(dep)
        seen[name] = "done"

    for name in services:
        visit(name)


# ---------------------------------------------------------------------------
# Environment


def test_dunning_services_share_the_anchor_environment() -> None:
    anchor = {k: interpolate(str(v), ENV) for k, v in _compose()["x-dunning-env"].items()}
    for name in DUNNING_SERVICES:
        assert _environment(_services()[name]) == anchor, name


def test_every_variable_set_in_compose_is_one_the_code_reads() -> None:
    known = recognised_variables()
    assert known >= REQUIRED_ENV, REQUIRED_ENV - known
    for name, service in _services().items():
        if name not in DUNNING_SERVICES:
            continue
        for var in _environment(service):
            assert var in known, f"{name}: {var} is not read by dunning (typo?); known: {sorted(known)}"
    assert set(_compose()["x-dunning-env"]) >= REQUIRED_ENV


def test_load_settings_reads_the_compose_environment() -> None:
    """The compose environment, as a container sees it, gives the settings meant."""
    services = _services()
    env = _environment(services["worker"])
    settings = load_settings(env)
    assert settings.database_url == env["DUNNING_DATABASE_URL"]
    assert settings.redis_url == env["DUNNING_REDIS_URL"]
    assert settings.smtp_url == env["DUNNING_SMTP_URL"]
    assert settings.billing_url == env["DUNNING_BILLING_URL"]
    assert settings.billing_secret == env["DUNNING_BILLING_SECRET"]
    assert settings.ingest_secret == env["DUNNING_INGEST_SECRET"]
    assert settings.link_secret == env["DUNNING_LINK_SECRET"]
    assert settings.public_url == env["DUNNING_PUBLIC_URL"]
    assert settings.ops_token == env["DUNNING_OPS_TOKEN"] == ENV["DUNNING_OPS_TOKEN"]
    Tuning.from_env(env)  # no malformed DUNNING_TUNING_* value

    # Each URL points at a service of this file, on the port that service listens on.
    db = make_url(settings.database_url)
    assert (db.get_backend_name(), db.get_driver_name()) == ("postgresql", "psycopg")
    pg_env = _environment(services["postgres"])
    assert db.host == "postgres" and db.port == 5432
    assert (db.username, db.password, db.database) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    redis_url = urlsplit(settings.redis_url or "")
    assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379)
    smtp = urlsplit(settings.smtp_url or "")
    assert (smtp.scheme, smtp.hostname, smtp.port) == ("smtp", "mailpit", 1025)
    billing = urlsplit(settings.billing_url or "")
    sandbox = _command(services["sandbox"])
    assert billing.hostname == "sandbox" and str(billing.port) == sandbox[sandbox.index("--port") + 1]


def test_interpolation_keeps_overrides_from_the_environment() -> None:
    """Production values given in `.env` or the shell replace the laptop defaults."""
    raw = _compose()["x-dunning-env"]
    for var in (
        "DUNNING_BILLING_URL",
        "DUNNING_BILLING_SECRET",
        "DUNNING_INGEST_SECRET",
        "DUNNING_LINK_SECRET",
    ):
        assert interpolate(str(raw[var]), {var: "from-env"}) == "from-env", var


# ---------------------------------------------------------------------------
# Secrets and published ports


def _references(text: str) -> list[re.Match[str]]:
    return [m for m in INTERPOLATION.finditer(text) if m["name"]]


def test_no_secret_has_a_default() -> None:
    """Every use of a secret is ``${VAR:?reason}``: unset or empty, compose refuses to start."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    uses = [m for m in _references(text) if m["name"] in SECRETS]
    assert {m["name"] for m in uses} == SECRETS, "a secret the stack needs is not used in compose.yaml"
    for m in uses:
        assert m["op"] == ":?", (
            f"{m.group(0)}: a secret must be required (${{{m['name']}:?...}}), not defaulted"
        )
        assert ".env.example" in (m["arg"] or ""), f"{m.group(0)}: say where to set it"
    # And no secret-looking variable is set to a literal value, in any service.
    for name, service in _services().items():
        raw = service.get("environment") or {}
        for var, value in raw.items():
            if re.search(r"SECRET|PASSWORD|TOKEN", var):
                refs = _references(str(value))
                assert refs and all(r["op"] == ":?" for r in refs), f"{name}: {var}={value!r} has a default"


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    interpolate(text, ENV)  # with every secret set, the whole file interpolates
    for missing in ({k: v for k, v in ENV.items() if k != secret}, {**ENV, secret: ""}):
        with pytest.raises(AssertionError, match=rf"\${{{secret}}} is required: set {secret} in \.env"):
            interpolate(text, missing)


def _published(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str]]:
    """(host IP, host port) of each published port, after interpolation; host IP "" if none is given."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):  # long syntax
            out.append((interpolate(str(port.get("host_ip", "")), env), str(port.get("published", ""))))
            continue
        parts = interpolate(str(port), env).split("/", 1)[0].rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, parts[-2] if len(parts) >= 2 else parts[-1]))
    return out


def test_every_published_port_is_bound_to_the_loopback_by_default() -> None:
    published = {name: _published(service, ENV) for name, service in _services().items()}
    assert published["serve"] == [("127.0.0.1", "8000")]
    assert {name for name, ports in published.items() if ports} == LOOPBACK_ONLY | {"serve"}
    for name, ports in published.items():
        for host_ip, host_port in ports:
            # No host IP means every interface: Docker then publishes past the host's firewall.
            assert host_ip == "127.0.0.1", (
                f"{name}: port {host_port} published on {host_ip or 'all interfaces'}"
            )


def test_only_serve_follows_dunning_bind() -> None:
    """DUNNING_BIND publishes `serve` elsewhere; the unauthenticated services stay on the loopback."""
    env = {**ENV, "DUNNING_BIND": "0.0.0.0"}
    assert _published(_services()["serve"], env) == [("0.0.0.0", "8000")]
    for name in LOOPBACK_ONLY:
        assert all(ip == "127.0.0.1" for ip, _ in _published(_services()[name], env)), name


def _env_example() -> dict[str, str]:
    """The variables .env.example names, set (``NAME=value``) or shown commented out (value "")."""
    pairs: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)", line.strip())
        if match:
            pairs[match["name"]] = "" if match["comment"] else match["value"]
    return pairs


def test_env_example_lists_every_variable_compose_requires_and_ships_no_secret() -> None:
    example = _env_example()
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = {m["name"] for m in _references(text) if m["op"] in (":?", "?")}
    assert required == SECRETS
    assert required <= set(example), f".env.example does not list {sorted(required - set(example))}"
    for name in SECRETS:
        assert example[name] == "", f".env.example ships a value for {name}"
    # Everything it names is a variable of compose.yaml (a typo would silently do nothing).
    used = {m["name"] for m in _references(text)}
    assert set(example) <= used, sorted(set(example) - used)


# ---------------------------------------------------------------------------
# Healthchecks, run for real


@contextmanager
def _serving(database_url: str, home: Path) -> Iterator[int]:
    """The real ``dunning serve`` app under uvicorn on a free loopback port; yields the port."""
    import uvicorn

    from dunning.http.app import create_app
    from dunning.runtime import build_runtime

    rt = build_runtime(load_settings({"DUNNING_HOME": str(home), "DUNNING_DATABASE_URL": database_url}))
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        rt.close()
        # /healthz also pings the broker, which started the install's embedded Redis: stop it.
        from dunning.devtools.embedded_redis import stop_embedded_redis

        stop_embedded_redis(home)


def test_serve_healthcheck_against_the_real_app(tmp_path: Path) -> None:
    """Healthy while the database answers, unhealthy (503) when it does not."""
    code = _healthcheck_code(_services()["serve"])
    assert "/healthz" in code
    with _serving(f"sqlite:///{tmp_path / 'dunning.db'}", tmp_path) as port:
        assert _run_healthcheck(code, port) == 0
    # A directory is not a database file: every connection fails, as with PostgreSQL down.
    (tmp_path / "not-a-file").mkdir()
    with _serving(f"sqlite:///{tmp_path / 'not-a-file'}", tmp_path) as port:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.value.code == 503
        assert _run_healthcheck(code, port) != 0


def test_sandbox_healthcheck_against_the_real_sandbox() -> None:
    from dunning.devtools.sandbox import SandboxServer

    server = SandboxServer(secret="s", host="127.0.0.1", port=0)
    url = server.start()
    try:
        code = _healthcheck_code(_services()["sandbox"])
        assert _run_healthcheck(code, int(urlsplit(url).port or 0)) == 0
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_builds_a_non_root_dunning_image() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and ln[0] != "#"]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert froms and froms[-1] == "python:3.11-slim", froms
    assert re.search(r"pip install .*\buv\b", text)
    assert "uv sync --locked --no-dev" in text
    final = lines[max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")) :]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert 'ENTRYPOINT ["dunning"]' in final
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dunning = "dunning\.cli:main"$', pyproject, re.M)


def test_dockerignore_keeps_local_state_out_but_not_what_the_build_copies() -> None:
    ignored = [
        ln.strip().rstrip("/") for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if ln.strip()
    ]
    ignored = [ln for ln in ignored if not ln.startswith("#")]
    for must in (".venv", ".dunning", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"):
        assert must in ignored, must
    copied: list[str] = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            copied += parts[1:-1]
    assert copied, "the Dockerfile copies nothing"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        top = source.split("/", 1)[0]
        assert not any(Path(top).match(pattern) for pattern in ignored), f"COPY {source} is .dockerignored"


# ---------------------------------------------------------------------------
# docs/configuration.md


def test_configuration_doc_names_every_variable() -> None:
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    missing = sorted(v for v in recognised_variables() if f"`{v}`" not in doc)
    assert not missing, f"docs/configuration.md does not document {missing}"


# ---------------------------------------------------------------------------
# docker compose config


# `docker compose config -q` would be a further check, but neither the compose plugin nor
# docker-compose exists on these machines (no Docker engine either); the tests above parse and
# check the file themselves instead.
