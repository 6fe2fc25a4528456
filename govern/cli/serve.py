"""``govern serve``: the gateway (HTTP, the PostgreSQL wire and Arrow Flight SQL)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click
from pyarrow.lib import ArrowException

from govern.cli._common import config_option, fail, load, report
from govern.errors import GovernError


@click.command("serve")
@config_option
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8000).")
@click.option("--pg-port", type=int, default=None,
              help="PostgreSQL wire port (default from settings: 6432; 0 disables it).")
@click.option("--flight-port", type=int, default=None,
              help="Arrow Flight SQL port (default from settings: 8815; 0 disables it).")
@click.option("--no-watch", is_flag=True, help="Do not hot-reload policy files.")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), default=None,
              help="Serve HTTPS with this PEM certificate (chain) (setting ssl_certfile).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), default=None,
              help="The certificate's PEM private key (setting ssl_keyfile).")
def serve(config: str | None, host: str | None, port: int | None, pg_port: int | None, flight_port: int | None,
          no_watch: bool, ssl_certfile: str | None, ssl_keyfile: str | None) -> None:
    """Run the gateway (HTTP, the PostgreSQL wire protocol for psql and BI tools, and Arrow
    Flight SQL for ADBC)."""
    import uvicorn

    from govern.flight.server import FlightServerThread
    from govern.logs import log_everything_as_json
    from govern.pgwire.server import PgServerThread
    from govern.server.app import create_app
    from govern.server.connections import idle_closing_protocol
    from govern.storage.scan import use_jemalloc

    use_jemalloc()  # a long-running server: the allocator that returns freed memory (docs/performance.md)
    try:
        options = {"host": host, "port": port, "pg_port": pg_port, "flight_port": flight_port,
                   "watch_policies": False if no_watch else None, "ssl_certfile": ssl_certfile,
                   "ssl_keyfile": ssl_keyfile}
        settings = load(config, None, **{k: v for k, v in options.items() if v is not None})
        if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
            fail("error: HTTPS needs both ssl_certfile and ssl_keyfile (--ssl-certfile, --ssl-keyfile)")
        app = create_app(settings)
    except GovernError as exc:
        report(exc)
    h, p = settings.host, settings.port
    scheme = "https" if settings.ssl_certfile else "http"
    gateway = app.state.gateway
    wire_port = settings.pg_port
    pg: PgServerThread | None = None
    if wire_port:
        pg = PgServerThread(gateway, settings.pg_host, wire_port)
        try:
            pg.start()
        except OSError as exc:
            fail(f"error: cannot listen for PostgreSQL clients on {settings.pg_host}:{wire_port}: "
                  f"{exc.strerror or exc} (set pg_port, or --pg-port 0 to disable)")
    grpc_port = settings.flight_port
    fl: FlightServerThread | None = None
    if grpc_port:
        fl = FlightServerThread(gateway, settings.flight_host, grpc_port)
        try:
            fl.start()
        except (OSError, ArrowException) as exc:
            if pg is not None:
                pg.stop()
            fail(f"error: cannot listen for Flight SQL clients on {settings.flight_host}:{grpc_port}: {exc} "
                 "(set flight_port, or --flight-port 0 to disable)")
    log_everything_as_json(settings.log_level)  # uvicorn, sqlglot, SDV, warnings, tracebacks: one JSON line each
    log = logging.getLogger("govern.serve")
    log.info(f"govern gateway on {scheme}://{h}:{p} (policy {gateway.governor.state.policy.version})",
             extra={"url": f"{scheme}://{h}:{p}", "policy_version": gateway.governor.state.policy.version})
    if pg is not None:
        log.info(f"govern PostgreSQL wire on {settings.pg_host}:{pg.port} "
                 "(user = principal, password = API key, database = purpose)")
    if fl is not None:
        log.info(f"govern Flight SQL on grpc://{settings.flight_host}:{fl.port} "
                 "(user = principal, password = API key; purpose: x-purpose header or catalog)")

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if pg is not None:  # stop SQL sessions before the gateway closes its audit log
                await asyncio.to_thread(pg.stop)
            if fl is not None:
                await asyncio.to_thread(fl.stop)
            await super().shutdown(sockets)

    config_ = uvicorn.Config(app, host=h, port=p, log_level=settings.log_level, access_log=False,
                             http=idle_closing_protocol(), timeout_keep_alive=max(1, int(settings.http_idle_timeout)),
                             ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile,
                             log_config=None)  # uvicorn's loggers go through govern's JSON logging
    try:
        Server(config_).run()
    finally:
        if pg is not None:
            pg.stop()
        if fl is not None:
            fl.stop()
