"""`aurum bento build` packages the approved champion: the Bento serves it with the registry gone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving import launcher
from serving.keys import KeyStore

MARKET = "SYN_NORTH"
AURUM = str(Path(sys.executable).with_name("aurum"))


@pytest.mark.slow
def test_a_built_bento_serves_the_bundled_champion_without_the_registry(served_env, tmp_path):
    home = served_env.settings.home_dir
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(home),
           "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run([AURUM, "bento", "build", "--markets", MARKET], env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    tag = built.stdout.strip().splitlines()[-1]
    assert tag.startswith("aurum-forecast:")
    with KeyStore.open(served_env.settings) as keys:
        key = keys.create("bento", [MARKET]).token
    # Nothing listens on port 1: a registry lookup would fail, so the model can only come from the Bento.
    service = launcher.start(home, tmp_path / "bento.log", target=tag, env={
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "AURUM_MLFLOW__TRACKING_URI": "postgresql+psycopg2://nobody@127.0.0.1:1/none"})
    try:
        with service.client(key) as c:
            r = c.post("/v1/forecast", json={"market": MARKET, "delivery_day": "2024-04-12"})
            models = c.get("/v1/models").json()
    finally:
        service.stop()
    assert r.status_code == 200, r.text
    assert r.json()["model"]["version"] == served_env.champions[MARKET]
    assert models["markets"][MARKET]["source"] == "bundle"
    assert models["markets"][MARKET]["champion"]["version"] == served_env.champions[MARKET]


def test_building_without_a_champion_is_a_clear_error(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}, "AURUM_HOME": str(tmp_path / "home"),
           "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    built = subprocess.run([AURUM, "bento", "build", "--markets", MARKET], env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 2 and "has no 'champion' version" in built.stderr
