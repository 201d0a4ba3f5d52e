"""The HTTP edge: what every request meets before a route and after it.

`http_server` (uvicorn with timeouts, header and keep-alive limits, SIGTERM), `request_id` and
`request_context` (the request id, the access log, the request metrics), `limits` (the body guard: size,
depth, JSON parsing), `rate_limits` (per key, shared through Redis when configured) and `allowed_methods`
(the `Allow` header of a 405). The routes themselves are in `aegis_server.api`.
"""

__all__: list[str] = []
