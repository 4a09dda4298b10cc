"""Fixtures of the monitoring tests: the shared environment (see ``driftenv``), built once per session and
read-only but for the monitoring records (reports, table rows, MLflow runs) checks add; and a webhook
receiver, a real HTTP server on a free loopback port."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftenv import DriftEnvs, build_drift_envs


@pytest.fixture(scope="session")
def drift_envs(tmp_path_factory) -> DriftEnvs:
    return build_drift_envs(tmp_path_factory.mktemp("monitoring"))


class _Receiver(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A real HTTP server on a free loopback port that records every POST."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def archived_envs(drift_envs) -> DriftEnvs:
    """``drift_envs`` with the champion's batch forecasts of ``driftenv.ARCHIVED`` in both archives."""
    from driftenv import ARCHIVED, archive_batch

    for env in (drift_envs.stable, drift_envs.shifted):
        archive_batch(env, *ARCHIVED)
    return drift_envs
