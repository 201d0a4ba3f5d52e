"""`aegis-server serve` as a real process on a loopback port (restartable after a SIGKILL on the same port
and database), and store work done on its own loop in a thread. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class ServerProcess:
    def __init__(self, db_url: str, policy: Path, log_path: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "AEGIS_RATE_LIMIT_PER_MINUTE": "0", **env}
        self.command = [
            sys.executable, "-m", "aegis_server", "serve", "--db", db_url, "--policy", str(policy),
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"aegis-server exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"aegis-server not ready in {READY_TIMEOUT:g} s:\n{self.logs()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no grace — the crash the outbox must survive."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
