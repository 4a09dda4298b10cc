"""The settings object: profiles, environment variables, clear errors."""

from pathlib import Path

import pytest

from features.errors import ConfigurationError
from features.settings import AurumSettings


def test_local_profile_keeps_everything_under_home(tmp_path):
    props = AurumSettings(home=tmp_path).catalog_properties()
    assert props["type"] == "sql"
    assert props["uri"] == f"sqlite:///{tmp_path / 'catalog.db'}"
    assert props["warehouse"] == (tmp_path / "warehouse").as_uri()


def test_environment_variables_with_the_aurum_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("AURUM_HOME", str(tmp_path))
    monkeypatch.setenv("AURUM_PROFILE", "prod")
    monkeypatch.setenv("AURUM_CATALOG__WAREHOUSE", "s3://bucket/aurum")
    monkeypatch.setenv("AURUM_CATALOG__PROPERTIES", '{"s3.endpoint": "http://127.0.0.1:9000"}')
    monkeypatch.setenv("AURUM_POSTGRES_URL", "postgresql+psycopg2://u@db:5432/aurum")
    s = AurumSettings()
    assert s.home == Path(tmp_path)
    assert s.catalog_properties() == {
        "type": "sql", "uri": "postgresql+psycopg2://u@db:5432/aurum", "warehouse": "s3://bucket/aurum",
        "s3.endpoint": "http://127.0.0.1:9000",
    }


def test_prod_without_a_warehouse_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="AURUM_CATALOG__WAREHOUSE"):
        AurumSettings(profile="prod").catalog_properties()


def test_rest_catalog_is_configurable():
    s = AurumSettings(profile="prod", catalog={"type": "rest", "uri": "https://catalog.example/api",
                                               "warehouse": "analytics", "properties": {"token": "t"}})
    assert s.catalog_properties() == {"type": "rest", "uri": "https://catalog.example/api",
                                      "warehouse": "analytics", "token": "t"}
    with pytest.raises(ConfigurationError, match="REST catalog needs AURUM_CATALOG__URI"):
        AurumSettings(catalog={"type": "rest"}).catalog_properties()


def test_a_bad_profile_names_the_value(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("AURUM_PROFILE", "staging")
    with pytest.raises(ValidationError, match="'local' or 'prod'"):
        AurumSettings()
