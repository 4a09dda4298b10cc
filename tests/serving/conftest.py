"""Serving fixtures: a synthetic market with an approved champion.

``served_env`` is read-only and shared by the session (tests that change the registry or the
online store build their own with ``marketenv.build_served_env``). ``liveservice`` starts a real
``bentoml serve`` of it.
"""

from __future__ import annotations

import pytest

from marketenv import MarketEnv, build_served_env


@pytest.fixture(scope="session")
def served_env(tmp_path_factory) -> MarketEnv:
    """SYN_NORTH 2023-11-01..2024-04-15 with an approved LightGBM champion and a materialized online store."""
    return build_served_env(tmp_path_factory.mktemp("served") / "home")
