"""Feast declarations of Aurum's feature store; `feast apply` (aurum features apply) executes every .py here.

Only declarations live here. Catalog locations come from ``${VAR}`` values that
``features.featurestore`` derives from the settings, so nothing here names a path.
"""
