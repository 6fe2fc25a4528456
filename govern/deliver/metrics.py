"""Prometheus metrics of one gateway (every surface), one registry per gateway (no global state).

Label sets are bounded: routes are the app's route templates, methods a fixed list, reasons the
error types, datasets the catalog's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("govern_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("govern_request_seconds", "Time to response headers", ["route"],
                                 registry=self.registry)
        self.rows = Counter("govern_rows_total", "Rows delivered", ["dataset"], registry=self.registry)
        self.bytes = Counter("govern_bytes_total", "Bytes delivered", ["dataset"], registry=self.registry)
        self.denials = Counter("govern_denials_total", "Refused requests by reason", ["reason"],
                               registry=self.registry)

        # the PostgreSQL wire server (govern.pgwire); every label takes a fixed set of values
        self.pg_connections = Counter("govern_pgwire_connections_total", "PG wire connections by transport",
                                      ["transport"], registry=self.registry)  # tls | plain
        self.pg_open = Gauge("govern_pgwire_open_connections", "PG wire connections open now",
                             registry=self.registry)
        self.pg_queries = Counter("govern_pgwire_queries_total", "PG wire statements by kind and outcome",
                                  ["kind", "outcome"], registry=self.registry)  # outcome: ok | error | cancelled
        self.pg_bytes = Counter("govern_pgwire_bytes_total", "PG wire bytes", ["direction"],
                                registry=self.registry)  # in | out
        self.catalog_unanswered = Counter("govern_pgwire_catalog_unanswered_total",
                                          "Catalog queries the emulation could not answer (an error was sent)",
                                          registry=self.registry)
        self.policy = Gauge("govern_policy_version_info", "The policy version this instance serves "
                            "(value: since when, unix seconds)", ["version"], registry=self.registry)

    def serving(self, version: str, since: float) -> None:
        """The one policy version this instance serves now (the fleet compares them)."""
        self.policy.clear()
        self.policy.labels(version=version).set(since)

    def delivered(self, datasets: list[str], rows: int, nbytes: int) -> None:
        for name in datasets:
            self.rows.labels(dataset=name).inc(rows)
            self.bytes.labels(dataset=name).inc(nbytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
