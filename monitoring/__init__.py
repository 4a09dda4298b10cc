"""Monitoring of the serving champions: data and prediction drift against their training data, forecast
performance against the prices published later, alerts, dashboards, and retraining on a performance alert.

Depends on ``features`` and ``models`` only; meets training and serving through the MLflow registry
(the ``champion`` alias, its run's lineage and backtest metrics), the Feast feature service, Iceberg
tables (``serving.forecasts``, ``market.prices``, ``monitoring.monitoring_metrics``) and, for retraining,
the platform's own CLI in a subprocess. Evidently is imported by ``monitoring.evidently_adapter`` alone.
See docs/monitoring.md.
"""
