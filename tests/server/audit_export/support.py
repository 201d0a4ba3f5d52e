"""Shared by the audit export tests: reading an export file back and checking it is the chain, a loopback
HTTP receiver that answers as the test says, and proposals to drive."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLICIES = Path(__file__).with_name("policies.yaml")


def read_lines(path: Path, backups: int = 0) -> list[dict[str, Any]]:
    """The records of `path` and its rotated files, oldest first (each line must be complete JSON)."""
    files = [path.with_name(f"{path.name}.{index}") for index in range(backups, 0, -1)] + [path]
    records = []
    for file in files:
        if file.exists():
            data = file.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{file.name} ends inside a line"
            records.extend(json.loads(line) for line in data.splitlines())
    return records


def assert_chain(records: list[dict[str, Any]], first: int = 1) -> None:
    """Contiguous sequences from `first`, each previous_hash the prior record's hash."""
    assert [record["sequence"] for record in records] == list(range(first, first + len(records)))
    for prior, record in itertools.pairwise(records):
        assert record["previous_hash"] == prior["hash"], record["sequence"]


def proposal(capability: str = "database.query", **parameters: Any) -> dict[str, Any]:
    parameters = parameters or {"query": "select 1"}
    return {
        "actor": {"id": "support-bot-1", "type": "ai-agent"},
        "action": {"capability": capability, "parameters": parameters},
        "context": {"session_id": "sess-1"},
    }


class Receiver:
    """An HTTP server on 127.0.0.1 recording each POST (headers, body) and answering `answer(n)` for the
    n-th request: (status, headers)."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, dict[str, str], bytes]] = []
        self.answer: Callable[[int], tuple[int, dict[str, str]]] = lambda _: (200, {})
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    status, headers = receiver.answer(len(receiver.requests))
                    receiver.requests.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/ingest/secret-path"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def taken(self) -> list[dict[str, Any]]:
        """The records of the batches answered 2xx, in arrival order."""
        with self._lock:
            return [json.loads(line) for status, _, body in self.requests if status < 300 for line in body.splitlines()]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
