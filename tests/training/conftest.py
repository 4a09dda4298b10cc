"""A synthetic market with features and an applied feature store, shared read-only by the training tests."""

from __future__ import annotations

import pytest

from marketenv import MarketEnv, build_env


@pytest.fixture(scope="session")
def market_env(tmp_path_factory) -> MarketEnv:
    """Read-only: tests that change data build their own with ``build_env``."""
    return build_env(tmp_path_factory.mktemp("training") / "home")
