"""The HTTP sink: POSTs each batch as `application/x-ndjson` (the same lines as the file), with
`X-Aegis-Audit-First-Sequence` / `X-Aegis-Audit-Last-Sequence` so a receiver can dedupe a batch sent again,
and the configured `Authorization` header. A 2xx answer means the receiver durably took the batch;
anything else raises `SinkUnavailable` (with the receiver's Retry-After) and the exporter retries.
Nothing here logs the URL's path or the authorization."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from aegis_server.audit_export.record_format import CONTENT_TYPE, ExportLine
from aegis_server.audit_export.sink import SinkUnavailable
from aegis_server.retry_after import retry_after_seconds

__all__ = ["HttpSink"]


class HttpSink:
    """POSTs batches to `url`."""

    label = "http"

    def __init__(
        self,
        url: str,
        *,
        authorization: SecretStr | None,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._authorization = authorization
        self._timeout = timeout
        self._transport = transport
        self.host = urlsplit(url).hostname or "?"
        self.sink_id = "http-" + hashlib.sha256(url.encode()).hexdigest()[:16]
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> int | None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                transport=self._transport,
                trust_env=False,  # reached directly, never through the process's proxy settings
            )
        return None  # a receiver's state is unknown: the cursor says where to resume

    async def deliver(self, lines: Sequence[ExportLine]) -> None:
        if self._client is None:
            await self.open()
        assert self._client is not None
        headers = {
            "Content-Type": CONTENT_TYPE,
            "X-Aegis-Audit-First-Sequence": str(lines[0].sequence),
            "X-Aegis-Audit-Last-Sequence": str(lines[-1].sequence),
        }
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.get_secret_value()
        body = b"".join(line.data for line in lines)
        try:
            async with self._client.stream("POST", self._url, content=body, headers=headers) as response:
                status, retry_header = response.status_code, response.headers.get("retry-after")
        except httpx.TimeoutException:
            raise SinkUnavailable(f"timed out waiting for the receiver at {self.host}") from None
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"request to the receiver at {self.host} failed ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            retry_after = retry_after_seconds(retry_header, datetime.now(timezone.utc))
            message = f"the receiver at {self.host} answered HTTP {status}"
            raise SinkUnavailable(message, retry_after, too_large=status == 413)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
