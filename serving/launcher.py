"""Start the forecast service as its own process and wait until it is ready (tests, benchmarks, demos).

``aurum serve`` runs it in the foreground; this starts ``bentoml serve`` in the background on a free
(or given) loopback port and returns once ``/readyz`` answers 200, or fails with the end of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SOURCE_TARGET = "serving.service:ForecastService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_command(target: str, host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command of a source target or a Bento tag."""
    cmd = [str(Path(sys.executable).with_name("bentoml")), "serve", target, "--host", host, "--port", str(port)]
    return cmd + (["--working-dir", str(ROOT)] if target == SOURCE_TARGET else [])


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen
    log: Path
    started: float  # time.monotonic() when the process was started
    ready_after: float  # seconds from start to the first 200 of /readyz

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start(home: Path, log: Path, *, port: int | None = None, host: str = "127.0.0.1", target: str = SOURCE_TARGET,
          timeout: float = 90.0, env: dict[str, str] | None = None, inherit: bool = False) -> ServiceProcess:
    """Start the service for the home folder ``home`` in its own session; returns once it is ready.

    Unless ``inherit``, the service gets only the ``AURUM_`` variables given here (``AURUM_HOME`` and
    ``env``), so the caller's shell cannot change what is measured or tested.

    ``bentoml serve`` binds loopback ports it chose free a moment earlier (its process manager's
    control socket, and ours unless ``port`` is given); another process can take one in between. A
    start that fails with "Address already in use" is retried, up to three starts in all, with fresh
    ports where they are ours to choose.
    """
    for _ in range(2):
        try:
            return _start(home, log, port=port, host=host, target=target, timeout=timeout, env=env, inherit=inherit)
        except PortTaken:
            pass
    return _start(home, log, port=port, host=host, target=target, timeout=timeout, env=env, inherit=inherit)


class PortTaken(RuntimeError):
    """``bentoml serve`` exited because a port it chose was taken before it could bind it."""


def _start(home: Path, log: Path, *, port: int | None, host: str, target: str, timeout: float,
           env: dict[str, str] | None, inherit: bool) -> ServiceProcess:
    port = port or free_port()
    base = dict(os.environ) if inherit else {k: v for k, v in os.environ.items() if not k.startswith("AURUM_")}
    full = {**base, "AURUM_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
            **(env or {})}
    t0 = time.monotonic()
    with log.open("wb") as out:  # the child writes through its own copy of the descriptor
        proc = subprocess.Popen(service_command(target, host, port), env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    service = ServiceProcess(url, proc, log, t0, 0.0)
    with httpx.Client(timeout=2) as probe:
        while time.monotonic() < t0 + timeout:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                error = PortTaken if "Address already in use" in text else RuntimeError
                raise error(f"bentoml serve exited with {proc.returncode}:\n{text[-3000:]}")
            try:
                if probe.get(f"{url}/readyz").status_code == 200:
                    service.ready_after = time.monotonic() - t0
                    return service
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"service not ready within {timeout} s:\n{log.read_text()[-3000:]}")
