"""Drift alerts as Prometheus metrics: a collector the gateway registers in its registry.

    registry.register(DriftCollector(ProfileStore.under(settings.state_dir), settings))

Each scrape reads the stored profiles (:func:`govern.monitor.run.current_drift`) and exports,
per dataset view and comparison (``against`` = ``baseline`` | ``previous``):

- ``govern_drift_alert`` 1 when the share of drifted columns reached ``monitor.drift_share``;
- ``govern_drift_share`` the share of drifted columns;
- ``govern_drift_column`` 1 for each drifted column, 0 for each compared one that did not drift;
- ``govern_drift_score`` each column's metrics (``wasserstein_sigma``, ``jensen_shannon``,
  ``psi``, ``null_rate_delta``);
- ``govern_profile_rows`` and ``govern_profile_timestamp_seconds`` of the latest profile.

Labels are the catalog's dataset and column names, the first 16 hex digits of the view key and
fixed words: bounded by the catalog. Values are aggregates of masked views, never data.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from govern.config import Settings
from govern.monitor.run import current_drift
from govern.monitor.store import ProfileStore

__all__ = ["DriftCollector"]


class DriftCollector(Collector):
    def __init__(self, store: ProfileStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        alert = GaugeMetricFamily("govern_drift_alert", "1 when the share of drifted columns reached monitor.drift_share",
                                  labels=["dataset", "view", "against"])
        share = GaugeMetricFamily("govern_drift_share", "Share of compared columns that drifted",
                                  labels=["dataset", "view", "against"])
        column = GaugeMetricFamily("govern_drift_column", "1 if the column drifted, 0 if compared and stable",
                                   labels=["dataset", "view", "against", "column"])
        score = GaugeMetricFamily("govern_drift_score", "Drift metric of a column",
                                  labels=["dataset", "view", "against", "column", "metric"])
        rows = GaugeMetricFamily("govern_profile_rows", "Rows of the latest profiled data version",
                                 labels=["dataset", "view"])
        stamp = GaugeMetricFamily("govern_profile_timestamp_seconds", "When the latest data version was profiled",
                                  labels=["dataset", "view"])
        for found in current_drift(self.store, self.settings):
            view = found.view_key[:16]
            rows.add_metric([found.dataset, view], found.latest.rows)
            stamp.add_metric([found.dataset, view], datetime.fromisoformat(found.latest.computed_at).timestamp())
            for report in (found.baseline, found.previous):
                if report is None:
                    continue
                labels = [found.dataset, view, report.against]
                alert.add_metric(labels, 1.0 if report.drifted else 0.0)
                share.add_metric(labels, report.share)
                for c in report.columns:
                    if not c.comparable:
                        continue
                    column.add_metric([*labels, c.column], 1.0 if c.drifted else 0.0)
                    for metric, value in c.metrics.items():
                        score.add_metric([*labels, c.column, metric], value)
        yield from (alert, share, column, score, rows, stamp)
