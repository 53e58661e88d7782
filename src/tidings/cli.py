"""The ``tidings`` command: serve, api, worker, send, status, keys, migrate."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.table import Table

from tidings import logs, metrics
from tidings.api.schemas import message_json
from tidings.batch_cli import send_batch
from tidings.clock import to_api, to_db, utcnow
from tidings.config import Settings, load_settings
from tidings.errors import ConfigError, TidingsError
from tidings.services import Service
from tidings.services.accepting import SendRequest
from tidings.services.operators import OperatorService
from tidings.services.stats import StatsService
from tidings.store import Store
from tidings.store.db import shown_url, sqlite_file, unreachable
from tidings.store.keys import ALL_SCOPES
from tidings.store.migrate import upgrade
from tidings.store.stats import GROUP_KEYS

if TYPE_CHECKING:
    from tidings.rpc.server import GrpcServer

log = logging.getLogger(__name__)

app = typer.Typer(help="tidings: self-hosted SMS delivery with truthful statuses.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(help="Read and replay the webhook log.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
users_app = typer.Typer(help="Manage the dashboard's users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]


def _print_rows(rows: list[dict[str, Any]], columns: list[str], *, as_json: bool) -> None:
    """``rows`` as a table for a person (``rich``), or as JSON lines for a program."""
    if as_json:
        for row in rows:
            typer.echo(orjson.dumps(row).decode())
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "), no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    # Wide, so that a table read by another program is never wrapped; no trailing blanks.
    console = Console(file=io.StringIO(), width=10_000, soft_wrap=True, color_system=None)
    console.print(table)
    for line in console.file.getvalue().splitlines():  # type: ignore[attr-defined]
        typer.echo(line.rstrip())


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _config_errors(exc)
        raise typer.Exit(2) from exc
    logs.configure(settings.log_level, settings.log_format)
    global _database_url_shown
    _database_url_shown = shown_url(settings.database_url)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command; a failure to start (bad settings, a database out of reach, a busy port) is
    one line naming the cause and the setting, and exit code 2."""
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
            return asyncio.run(coro)
        return uvloop.run(coro)
    except ConfigError as exc:
        _config_errors(exc)
        raise typer.Exit(2) from exc
    except StartupError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        database = database_problem(exc)
        if database is None:
            raise
        typer.echo(f"tidings: {database}", err=True)
        raise typer.Exit(2) from exc


class StartupError(TidingsError):
    """tidings could not start."""


def database_problem(exc: BaseException) -> str | None:
    """One line saying why the database cannot be used, or ``None`` when ``exc`` is not about that."""
    settings_url = _database_url_shown
    root: BaseException = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    refused = isinstance(
        root,
        asyncpg.exceptions.InvalidPasswordError
        | asyncpg.exceptions.InvalidAuthorizationSpecificationError
        | asyncpg.exceptions.InvalidCatalogNameError,
    )
    if not refused and not unreachable(exc):
        return None
    reason = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return f"cannot use the database {settings_url or 'configured'} (database_url): {reason}"


_database_url_shown: str | None = None
"""The database URL without its password, for messages (set when the settings are read)."""


def _config_errors(exc: ConfigError) -> None:
    """The configuration's problems, one line each."""
    if len(exc.problems) == 1:
        typer.echo(f"tidings: configuration error: {exc.problems[0]}", err=True)
        return
    typer.echo(f"tidings: configuration errors ({len(exc.problems)}):", err=True)
    for problem in exc.problems:
        typer.echo(f"  - {problem}", err=True)


def _service(settings: Settings) -> Service:
    try:
        return Service(settings)
    except ConfigError as exc:
        _config_errors(exc)
        raise typer.Exit(2) from exc


async def _with_store(
    settings: Settings, action: Callable[[Store], Awaitable[T]], *, migrate: bool = True
) -> T:
    store = Store.connect(
        settings.database_url, sqlite_synchronous=settings.sqlite_synchronous, pool_size=settings.pool_size
    )
    try:
        if migrate and settings.auto_migrate:
            await upgrade(store.engine)
        return await action(store)
    finally:
        await store.close()


async def _with_service(settings: Settings, action: Callable[[Service], Awaitable[T]]) -> T:
    """Run ``action`` on a started service (no worker, no API): what the CLI's one-off commands
    use, so that they go through the same services as the API."""
    service = _service(settings)
    try:
        await service.start()
        return await action(service)
    finally:
        await service.close()


async def _first_key(service: Service) -> None:
    """On first start with an empty database, create one API key and print it once."""
    if await service.store.keys.count() == 0:
        _key, secret = await service.store.keys.create("default")
        typer.echo("")
        typer.echo("Created the first API key, named 'default'. It is shown only this once; keep it:")
        typer.echo(f"    {secret}")
        typer.echo("")
        sys.stdout.flush()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _listen(host: str, port: int, setting: str = "port", *, shared: bool = False) -> socket.socket:
    """A listening socket on ``host``:``port``, or :class:`StartupError` naming the setting.
    ``shared``: one of several on the same port (``SO_REUSEPORT``), among which the kernel
    spreads the new connections."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {host}:{port} (host, {setting}): {exc.strerror or exc}; another program "
            f"may be using it: choose another with --{setting.replace('_', '-')} or TIDINGS_{setting.upper()}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def _listening(
    settings: Settings, host: str | None, port: int | None, grpc_port: int | None = None
) -> Settings:
    """The settings with the address the command line gave: what the API listens on, and so what
    ``public_url`` is when it is not set (providers are told it, and sign receipts with it)."""
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if grpc_port is not None:
        changes["grpc_port"] = grpc_port
    return settings.model_copy(update=changes) if changes else settings


async def _serve(
    settings: Settings,
    *,
    with_api: bool,
    with_worker: bool,
    with_grpc: bool = False,
    fd: int | None = None,
    wake_to: str | None = None,
    wake_socket: str | None = None,
) -> None:
    """Run the parts asked for in this process. ``fd``: accept on this inherited socket instead of
    binding the port; ``wake_to``: wake the worker process listening there after each accept;
    ``wake_socket``: listen there for those wake-ups (a supervised group's processes)."""
    import uvicorn

    from tidings.api.app import create_app

    class Server(uvicorn.Server):
        # tidings handles SIGINT/SIGTERM itself, so that the worker drains and the service closes
        # before the process exits (uvicorn would re-raise the signal once it has stopped).
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    metrics.set_role(
        "serve" if with_api and with_worker else "api" if with_api else "worker" if with_worker else "grpc"
    )
    service = _service(settings)
    # Listen first: a busy port stops start-up before anything else starts.
    sockets = []
    if with_api:
        sockets = [socket.socket(fileno=fd) if fd is not None else _listen(settings.host, settings.port)]
    if wake_to is not None:
        service.waker.forward(wake_to)
    try:
        await service.start(listen=with_worker)
    except BaseException:
        for sock in sockets:
            sock.close()
        await service.close()
        raise
    listener = None
    if wake_socket is not None:
        from tidings.worker.wakeup import WakeListener

        listener = WakeListener(wake_socket, service.waker)
        listener.start()
    rpc: GrpcServer | None = None
    if with_grpc:
        # Imported only here: gRPC adds about 20 MB to a process that does not serve it.
        from tidings.rpc.server import GrpcServer

        rpc = GrpcServer(service, settings)
        try:
            await rpc.start(settings.host, settings.grpc_port)
        except BaseException:
            for sock in sockets:
                sock.close()
            await rpc.stop(0)
            await service.close()
            raise
    stop = asyncio.Event()
    _stop_on_signals(stop)
    server: Server | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if with_api:
            await _first_key(service)
            config = uvicorn.Config(
                create_app(service),
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=10,
                # The peer address is what the webhook allowlist checks; X-Forwarded-For is
                # believed only from the configured trusted_proxies, by tidings itself.
                proxy_headers=False,
            )
            server = Server(config)
            tasks.append(asyncio.create_task(server.serve(sockets=sockets)))
        if with_worker:
            tasks.append(asyncio.create_task(service.run_worker(stop)))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if rpc is not None:
            await rpc.stop()
        if listener is not None:
            listener.close()
        await service.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


HostOption = Annotated[
    str | None, typer.Option(help="Address to listen on (default: TIDINGS_HOST or 127.0.0.1).")
]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on (default: TIDINGS_PORT or 8000).")]
GrpcPortOption = Annotated[
    int | None,
    typer.Option(
        help="Port of the gRPC API (default: TIDINGS_GRPC_PORT or 50051; 0: none).", min=0, max=65535
    ),
]


Fd = Annotated[int | None, typer.Option(hidden=True, help="Accept on this inherited socket.")]
WakeTo = Annotated[str | None, typer.Option(hidden=True, help="Wake the worker listening here.")]


@app.command()
def serve(host: HostOption = None, port: PortOption = None, grpc_port: GrpcPortOption = None) -> None:
    """Run the API (REST and gRPC) and a worker: one HTTP process per core (the ``workers``
    setting) and one for the worker and gRPC, supervised; all in one process with ``workers = 1``."""
    settings = _listening(_settings(), host, port, grpc_port)
    if settings.http_processes > 1:
        _supervised(settings, with_worker=True)
    _run(_serve(settings, with_api=True, with_worker=True, with_grpc=settings.grpc_port != 0))


def _supervised(settings: Settings, *, with_worker: bool) -> None:
    """Run ``settings.http_processes`` HTTP processes on one port (and, ``with_worker``, one
    worker process that also serves gRPC) under a supervisor; exits when they have stopped."""
    from tidings.supervisor import Child, Supervisor, child_env, shared_directory

    async def prepare() -> None:
        # Migrate, check the providers and print the first key here, once, before any child.
        service = _service(settings)
        try:
            await service.start()
            await _first_key(service)
        finally:
            await service.close()

    # Listen first: a busy port stops start-up before anything else starts. Each HTTP process
    # has a socket of its own on the port, so that the kernel spreads connections evenly over
    # them (on one shared socket, the process that wakes first takes every waiting connection).
    try:
        # A port-sharing socket would share a port with another group too: bind it alone first.
        with _listen(settings.host, settings.port) as alone:
            port = alone.getsockname()[1]
        sockets = [_listen(settings.host, port, shared=True) for _ in range(settings.http_processes)]
        if with_worker and settings.grpc_port != 0:
            # The worker process serves gRPC: find a busy port now, not in a child restarted for ever.
            _listen(settings.host, settings.grpc_port, "grpc_port").close()
    except StartupError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    try:
        _run(prepare())
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    with shared_directory() as directory:
        env = child_env(directory, settings.metrics_dir)
        # The address the command line gave, for every child (what providers are told).
        env.update(
            TIDINGS_HOST=settings.host,
            TIDINGS_PORT=str(settings.port),
            TIDINGS_GRPC_PORT=str(settings.grpc_port),
        )
        wake = str(directory / "wake")
        children = [
            Child(
                f"http-{n}", ["api", "--fd", str(sock.fileno()), "--wake-to", wake], pass_fds=(sock.fileno(),)
            )
            for n, sock in enumerate(sockets, start=1)
        ]
        if with_worker:
            children.append(Child("worker", ["worker", "--wake-socket", wake, "--with-grpc"]))

        async def supervise() -> int:
            stop = asyncio.Event()
            _stop_on_signals(stop)
            log.info(
                "serving with %d HTTP processes%s",
                settings.http_processes,
                " and a worker process" if with_worker else "",
                extra={"action": "start", "http_processes": settings.http_processes},
            )
            return await Supervisor(children, env).run(stop)

        code = _run(supervise())
    for sock in sockets:
        sock.close()
    raise typer.Exit(code)


@app.command("grpc")
def grpc_api(host: HostOption = None, grpc_port: GrpcPortOption = None) -> None:
    """Run the gRPC API only (workers run elsewhere)."""
    settings = _listening(_settings(), host, None, grpc_port)
    if settings.grpc_port == 0:
        typer.echo("tidings: grpc_port is 0: the gRPC API is turned off", err=True)
        raise typer.Exit(2)
    _run(_serve(settings, with_api=False, with_worker=False, with_grpc=True))


@app.command()
def api(host: HostOption = None, port: PortOption = None, fd: Fd = None, wake_to: WakeTo = None) -> None:
    """Run the REST API only (workers run elsewhere): one process per core (the ``workers``
    setting) on one port, supervised; one process with ``workers = 1``."""
    settings = _listening(_settings(), host, port)
    if fd is None and settings.http_processes > 1:
        _supervised(settings, with_worker=False)
    _run(_serve(settings, with_api=True, with_worker=False, fd=fd, wake_to=wake_to))


@app.command()
def worker(
    wake_socket: Annotated[
        str | None, typer.Option(hidden=True, help="Be woken through this socket.")
    ] = None,
    with_grpc: Annotated[bool, typer.Option("--with-grpc", hidden=True, help="Serve gRPC as well.")] = False,
) -> None:
    """Run a worker only: claim due messages and send them."""
    settings = _settings()
    _run(
        _serve(
            settings,
            with_api=False,
            with_worker=True,
            with_grpc=with_grpc and settings.grpc_port != 0,
            wake_socket=wake_socket,
        )
    )


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest version."""
    settings = _settings()

    async def action(store: Store) -> str | None:
        return await upgrade(store.engine)

    revision = _run(_with_store(settings, action, migrate=False))
    typer.echo(f"database is at revision {revision}")


@app.command()
def send(
    to: Annotated[str, typer.Argument(help="Recipient number.")],
    body: Annotated[str, typer.Argument(help="Message text.")],
    provider: Annotated[str | None, typer.Option(help="Provider name.")] = None,
    sender: Annotated[str | None, typer.Option(help="Sender id or number.")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Send as this API key (id or name): its callback URL, signing secret, idempotency keys."
        ),
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="Where its status changes are posted (needs --key, which signs them).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Sending again with the same key returns the first message.")
    ] = None,
) -> None:
    """Queue a message (a running worker sends it) and print it as JSON."""
    settings = _settings()
    if callback_url is not None and key is None:
        typer.echo(
            "tidings: --callback-url needs --key: callbacks are signed with an API key's secret", err=True
        )
        raise typer.Exit(2)
    request = SendRequest(to=to, body=body, sender=sender, provider=provider, callback_url=callback_url)

    async def action(service: Service) -> dict[str, Any]:
        sender_key = await service.store.keys.named(key) if key is not None else None
        if key is not None and sender_key is None:
            raise TidingsError(f"no single active API key with id or name {key!r}")
        row, _created = await service.accepting.accept(
            request, key=sender_key, idempotency_key=idempotency_key
        )
        return row

    try:
        row = _run(_with_service(settings, action))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(orjson.dumps(message_json(row), option=orjson.OPT_INDENT_2).decode())


app.command("send-batch")(send_batch)


@app.command()
def status(message_id: Annotated[str, typer.Argument(help="Message id.")]) -> None:
    """Print a message, with its event history, as JSON."""
    settings = _settings()

    async def action(service: Service) -> dict[str, Any]:
        row, history = await service.messages.get(message_id)
        return message_json(row, history)

    try:
        found = _run(_with_service(settings, action))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@config_app.command("check")
def config_check() -> None:
    """Load and check every setting, every provider table and the database; say what is wrong,
    where the value came from and what to do (exit 2), or what is configured (exit 0)."""
    settings = _settings()
    service = _service(settings)

    async def database() -> tuple[str | None, str | None]:
        from tidings.store.migrate import current_revision, head_revision

        file = sqlite_file(settings.database_url)
        if file is not None and not file.exists():
            await service.store.close()
            return "no file yet: it is made at the first start", None
        try:
            await service.store.ping()
            revision = await current_revision(service.store.engine)
        except Exception as exc:
            return None, database_problem(exc) or f"cannot use the database (database_url): {exc}"
        finally:
            await service.store.close()
        if revision != head_revision():
            state = (
                f"schema at {revision or 'nothing'}, code expects {head_revision()}: run `tidings migrate`"
            )
            return state, None
        return f"schema at {revision}, up to date", None

    state, problem = _run(database())
    if problem is not None:
        typer.echo(f"tidings: {problem}", err=True)
        raise typer.Exit(2)
    config = settings.sources.file
    typer.echo(f"configuration file: {config or 'none (TIDINGS_CONFIG is not set)'}")
    typer.echo(f"database: {shown_url(settings.database_url)} ({state})")
    typer.echo(f"listens on: {settings.host}:{settings.port}; providers reach it at {settings.base_url}")
    for name, provider in service.providers.items():
        default = " (default)" if name == settings.default_provider else ""
        typer.echo(f"provider {name}: {provider.kind}{default}")
    rules = settings.alerts
    on = [name for name in type(rules).model_fields if getattr(rules, name).enabled]
    typer.echo(f"alert rules, checked every {settings.alert_interval:g} s: {', '.join(on) or 'none'}")
    typer.echo("configuration OK")


@app.command()
def prune() -> None:
    """Apply retention now: delete old webhook-log rows and callbacks, redact old bodies and texts
    (the worker also does it every prune_interval_seconds)."""
    settings = _settings()

    async def action(service: Service) -> dict[str, int]:
        return await service.retention.run_once()

    done = _run(_with_service(settings, action))
    for name, count in done.items():
        typer.echo(f"{name.replace('_', ' ')}: {count}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="What it may do: send, read, admin (repeat it; default: all three)."),
    ] = None,
    test: Annotated[
        bool, typer.Option("--test", help="A test key: its messages only reach the fake provider.")
    ] = False,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests a second it may make (default: the setting).")
    ] = None,
) -> None:
    """Create an API key; its secret is printed once, as the last line."""
    settings = _settings()
    scopes = frozenset(scope) if scope else ALL_SCOPES

    async def action(store: Store) -> tuple[str, str]:
        key, secret = await store.keys.create(name, scopes=scopes, rate_limit=rate_limit, test=test)
        return key.id, secret

    try:
        key_id, secret = _run(_with_store(settings, action))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    kind = "test key" if test else "API key"
    typer.echo(f"created {kind} {name!r} (id {key_id}); the secret below is shown only once")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(json_output: JsonOption = False) -> None:
    """List API keys (never their secrets)."""
    settings = _settings()

    async def action(store: Store) -> list[Any]:
        return await store.keys.all()

    keys = _run(_with_store(settings, action))
    _print_rows(
        [
            {
                "id": key.id,
                "name": key.name,
                "prefix": key.prefix,
                "created_at": to_api(key.created_at),
                "scopes": " ".join(sorted(key.scopes)),
                "test": key.test,
                "rate_limit": key.rate_limit,
                "state": f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active",
            }
            for key in keys
        ],
        ["id", "name", "prefix", "created_at", "scopes", "test", "rate_limit", "state"],
        as_json=json_output,
    )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke an API key by id or name."""
    settings = _settings()

    async def action(store: Store) -> Any:
        return await store.keys.revoke(key)

    revoked = _run(_with_store(settings, action))
    if revoked is None:
        typer.echo(f"tidings: no single key with id or name {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked API key {revoked.name!r} (id {revoked.id})")


def main() -> None:
    app()


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input (for scripts)."
    ),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _operators(action: Callable[[OperatorService], Awaitable[T]]) -> T:
    settings = _settings()

    async def run(store: Store) -> T:
        return await action(OperatorService(store.operators, settings.dashboard_session_hours))

    try:
        return _run(_with_store(settings, run))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="The name they sign in with.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a dashboard user (asks for the password twice, hashed with Argon2id)."""
    password = _password(password_stdin)
    made = _operators(lambda operators: operators.create(name, password))
    typer.echo(f"created dashboard user {made.name!r}; sign in at /dashboard")


@users_app.command("password")
def users_password(
    name: Annotated[str, typer.Argument(help="The user's name.")], password_stdin: PasswordStdin = False
) -> None:
    """Set a dashboard user's password (their sessions end)."""
    password = _password(password_stdin)
    _operators(lambda operators: operators.set_password(name, password))
    typer.echo(f"changed the password of {name!r}; their sessions are ended")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Stop a dashboard user from signing in (their sessions end at once)."""
    _operators(lambda operators: operators.set_disabled(name, True))
    typer.echo(f"disabled dashboard user {name!r}")


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Let a disabled dashboard user sign in again."""
    _operators(lambda operators: operators.set_disabled(name, False))
    typer.echo(f"enabled dashboard user {name!r}")


@users_app.command("list")
def users_list(json_output: JsonOption = False) -> None:
    """List the dashboard's users."""
    found = _operators(lambda operators: operators.store.all())
    _print_rows(
        [
            {
                "name": o.name,
                "created_at": to_api(o.created_at),
                "last_sign_in_at": to_api(o.last_sign_in_at),
                "state": "disabled" if o.disabled_at else "active",
            }
            for o in found
        ],
        ["name", "created_at", "last_sign_in_at", "state"],
        as_json=json_output,
    )


@webhooks_app.command("list")
def webhooks_list(
    failed: Annotated[bool, typer.Option("--failed", help="Only requests that were not processed.")] = False,
    provider: Annotated[str | None, typer.Option(help="Only this provider's requests.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    json_output: JsonOption = False,
) -> None:
    """List logged webhook requests, newest first."""
    settings = _settings()

    async def action(store: Store) -> list[Any]:
        return await store.webhooks.search(provider=provider, failed=failed, limit=limit)

    entries = _run(_with_store(settings, action))
    _print_rows(
        [
            {
                "id": entry.id,
                "provider": entry.provider,
                "event": entry.event,
                "http": entry.response_status,
                "state": entry.state,
                "error": entry.error,
            }
            for entry in entries
        ],
        ["id", "provider", "event", "http", "state", "error"],
        as_json=json_output,
    )


@webhooks_app.command("replay")
def webhooks_replay(entry_id: Annotated[int, typer.Argument(help="The webhook log entry's id.")]) -> None:
    """Process a logged webhook request again (after fixing what made it fail)."""
    settings = _settings()

    async def action(service: Service) -> Any:
        return await service.webhooks.replay(entry_id)

    try:
        entry = _run(_with_service(settings, action))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if not entry.processed:
        typer.echo(f"tidings: webhook {entry_id} failed again: {entry.error}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"webhook {entry_id} processed: {entry.reports} reports ({entry.unmatched} for unknown messages), "
        f"{entry.inbound} inbound"
    )


_AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_AGO_UNITS = {"m": 60.0, "h": 3600.0, "d": 86_400.0}


def _when(value: str) -> datetime:
    """``--since``/``--until``: an ISO 8601 time (UTC without an offset), or an age like ``90m``,
    ``24h`` or ``7d`` before now."""
    ago = _AGO.match(value.strip())
    if ago:
        return utcnow() - timedelta(seconds=float(ago.group(1)) * _AGO_UNITS[ago.group(2)])
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is neither a time (2025-03-14T09:00) nor an age (7d)") from exc
    return to_db(parsed)


def _percent(rate: float | None) -> str | None:
    return f"{rate * 100:.1f}%" if rate is not None else None


@app.command()
def stats(
    since: Annotated[str, typer.Option(help="Start: an ISO time, or an age like 24h or 7d.")] = "24h",
    until: Annotated[str | None, typer.Option(help="End (excluded): a time or an age; default now.")] = None,
    by: Annotated[
        str, typer.Option(help=f"Group by any of {', '.join(GROUP_KEYS)}, separated by commas.")
    ] = "",
    provider: Annotated[str | None, typer.Option(help="Only this provider's messages.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only sms or email.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only this batch's messages.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Messages accepted in a range: counts, delivery and failure rate, pending, segments, cost and
    time to sent and to delivered (as GET /v1/stats), in total and per group."""
    settings = _settings()
    start = _when(since)
    end = _when(until) if until else None

    async def action(store: Store) -> dict[str, Any]:
        service = StatsService(store, settings.stats_max_days)
        return await service.messages(
            since=start, until=end, by=[by], provider=provider, channel=channel, batch=batch
        )

    try:
        figures = _run(_with_store(settings, action))
    except TidingsError as exc:
        typer.echo(f"tidings: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    keys: list[str] = list(figures["by"])
    if "country" in keys:
        keys.insert(keys.index("country") + 1, "calling_code")
    rows = [{"group": "all", **figures["totals"]}] + [
        {"group": "", **group["key"], **group} for group in figures["groups"]
    ]
    if json_output:
        for row in rows:
            row.pop("key", None)
            typer.echo(orjson.dumps(row).decode())
        return
    table = [
        {
            **{k: row.get(k) for k in ["group", *keys]},
            "total": row["total"],
            "delivered": row["delivered"],
            "failed": row["failed"],
            "pending": row["pending"],
            "delivery_rate": _percent(row["delivery_rate"]),
            "failure_rate": _percent(row["failure_rate"]),
            "segments": row["segments"],
            "cost": " ".join(f"{amount} {currency}" for currency, amount in row["cost"].items()) or None,
            "sent_p50_s": row["seconds_to_sent"]["p50"],
            "sent_p95_s": row["seconds_to_sent"]["p95"],
            "delivered_p50_s": row["seconds_to_delivered"]["p50"],
            "delivered_p95_s": row["seconds_to_delivered"]["p95"],
        }
        for row in rows
    ]
    typer.echo(f"messages accepted from {figures['since']} until {figures['until']}")
    _print_rows(table, list(table[0]), as_json=False)
