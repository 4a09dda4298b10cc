"""Monitoring of the serving champions: data and prediction drift against their training data, and alerts.

Depends on ``features`` and ``models`` only; meets training and serving through the MLflow registry
(the ``champion`` alias and its run's lineage), the Feast feature service and Iceberg tables.
Evidently is imported by ``monitoring.evidently_adapter`` alone. See docs/monitoring.md.
"""
