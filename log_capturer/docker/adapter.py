"""A requests transport adapter that sends every Docker request through one bounded pool.

docker-py's own ``UnixHTTPAdapter`` keys its pools by the full request URL, so each
container id and each ``since=`` gets a pool of its own: short log streams never
reuse a connection, and past 25 URLs pools are evicted with their sockets
(docker-py #3311). This adapter has exactly one pool, whatever the URL.
"""

from __future__ import annotations

from typing import Any

import requests.adapters

from .pool import DockerConnectionPool


class PooledUnixAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, pool: DockerConnectionPool) -> None:
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)
        self.pool = pool

    def get_connection(self, url: str | bytes, proxies: Any = None) -> DockerConnectionPool:
        return self.pool

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> DockerConnectionPool:
        return self.pool

    def request_url(self, request: Any, proxies: Any) -> str:
        # No proxies on a unix socket; the path and query are the whole request target.
        return str(request.path_url)

    def close(self) -> None:
        super().close()
        self.pool.close()
