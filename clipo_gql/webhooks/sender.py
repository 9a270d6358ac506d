"""One signed POST of a webhook body (Standard Webhooks v1.0.0, "Signature scheme").

Every attempt goes through the SSRF policy (ssrf.py) again: the URL is checked and resolved,
and the connection can only reach the addresses just checked, so an endpoint whose DNS now
points inside our network is refused at delivery even though it passed at creation.
Connections are kept alive per (host, port, checked addresses); a new DNS answer gets a new
pool. Redirects are answers, not followed; at most RESPONSE_CAP bytes of a body are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import httpcore
from standardwebhooks.webhooks import Webhook

from clipo_gql.errors import ForbiddenUrlError
from clipo_gql.settings import Settings
from clipo_gql.ssrf import (
    AddressPolicy,
    CheckedUrl,
    IPAddress,
    PinnedBackend,
    check_url,
    connect_reason,
    pinned_pool,
    resolve,
    status_text,
)

log = logging.getLogger(__name__)

USER_AGENT = "clipo-gql-webhooks/0.1"
RESPONSE_CAP = 64 * 1024
POOLS = 256
# Below the 60 s or so most servers keep an idle connection: we close first, not mid-request.
KEEPALIVE_SECONDS = 30.0
_PoolKey = tuple[str, str, int, tuple[IPAddress, ...]]


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    def __init__(self, settings: Settings, policy: AddressPolicy | None = None) -> None:
        self.settings = settings
        self.policy = policy or AddressPolicy.from_settings(settings)
        self._pools: OrderedDict[_PoolKey, tuple[httpcore.AsyncConnectionPool, PinnedBackend]] = (
            OrderedDict()
        )
        self._closing: set[asyncio.Task[None]] = set()

    async def send(self, url: str, secret: str, event_id: str, body: str) -> Outcome:
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                checked = check_url(url, self.settings)
                addresses = await resolve(checked, self.settings, self.policy)
                return await self._post(checked, addresses, secret, event_id, body)
        except ForbiddenUrlError as exc:
            return Outcome(None, exc.message)
        except TimeoutError:
            return Outcome(None, f"No answer within {timeout:g} s")
        except httpcore.ConnectError as exc:
            return Outcome(None, f"Could not connect: {connect_reason(exc)}")
        except httpcore.RemoteProtocolError:
            return Outcome(None, "The endpoint sent an invalid or incomplete HTTP response")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException):
            return Outcome(None, "The connection failed")

    async def _post(
        self,
        checked: CheckedUrl,
        addresses: list[IPAddress],
        secret: str,
        event_id: str,
        body: str,
    ) -> Outcome:
        # Signed at each attempt: receivers refuse a timestamp older than five minutes.
        sent_at = datetime.now(UTC)
        signature = Webhook(secret).sign(event_id, sent_at, body)
        content = body.encode()
        t = self.settings.webhook_timeout_seconds
        async with self._pool(checked, addresses).stream(
            "POST",
            checked.request_url,
            headers=[
                (b"Host", checked.netloc.encode()),
                (b"User-Agent", USER_AGENT.encode()),
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(content)).encode()),
                (b"Accept-Encoding", b"identity"),
                (b"webhook-id", event_id.encode()),
                (b"webhook-timestamp", str(int(sent_at.timestamp())).encode()),
                (b"webhook-signature", signature.encode()),
            ],
            content=content,
            extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}},
        ) as response:
            read = 0
            async for chunk in response.aiter_stream():
                read += len(chunk)
                if read >= RESPONSE_CAP:
                    break  # the rest is not ours to read; the connection is closed instead
        status = response.status
        if 200 <= status < 300:
            return Outcome(status)
        reason = f"The endpoint answered {status_text(status)}"
        if 300 <= status < 400:
            reason += "; redirects are not followed, register the final URL"
        return Outcome(status, reason)

    def _pool(
        self, checked: CheckedUrl, addresses: list[IPAddress]
    ) -> httpcore.AsyncConnectionPool:
        key = (checked.scheme, checked.host, checked.port, tuple(addresses))
        found = self._pools.get(key)
        if found is not None:
            self._pools.move_to_end(key)
            return found[0]
        backend = PinnedBackend(addresses)
        pool = pinned_pool(
            addresses,
            max_connections=self.settings.webhook_endpoint_concurrency,
            keepalive_expiry=KEEPALIVE_SECONDS,
            backend=backend,
        )
        self._pools[key] = (pool, backend)
        while len(self._pools) > POOLS:
            _, evicted = self._pools.popitem(last=False)
            task = asyncio.get_running_loop().create_task(_close(*evicted))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool, backend in pools:
            await _close(pool, backend)


async def _close(pool: httpcore.AsyncConnectionPool, backend: PinnedBackend) -> None:
    with contextlib.suppress(Exception):
        await pool.aclose()
    await backend.close_all()
