"""A real HTTP/1.1 server that receives webhooks, for the tests (and the benchmarks).

Each request is recorded, then answered by `behave(request)`: a status (with headers), or
HANG to hold the connection open without answering. Keep-alive is supported, since the
sender keeps connections to an endpoint open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

HANG = -1
# Receivers listen on one of these, so that a test can allow them (URL_FETCH_ALLOWED_PORTS)
# without allowing every port.
PORTS = range(47099, 47400)
ALLOWED_PORTS = ",".join(str(p) for p in PORTS)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


Behaviour = Callable[[Received], Answer | int]


class Receiver:
    def __init__(self, behave: Behaviour | None = None) -> None:
        self.behave: Behaviour = behave or (lambda _: 200)
        self.received: list[Received] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        for port in random.sample(PORTS, len(PORTS)):
            try:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
            except OSError:
                continue  # taken (another test's receiver, or anything else)
            self.port = port
            return
        raise RuntimeError(f"no free port in {PORTS}")

    async def stop(self) -> None:
        # Not by cancelling the connections' tasks: asyncio logs those as errors.
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def wait_for(self, count: int, within: float = 30) -> list[Received]:
        """The first `count` requests, once they have arrived."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read(reader)
                if request is None:
                    return
                async with self._arrived:
                    self.received.append(request)
                    self._arrived.notify_all()
                answer = self.behave(request)
                if isinstance(answer, int):
                    if answer == HANG:
                        await self._stopping.wait()
                        return
                    answer = Answer(status=answer)
                head = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
                head += [f"{k}: {v}" for k, v in answer.headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read(reader: asyncio.StreamReader) -> Received | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = (await reader.readline()).decode("latin-1").rstrip("\r\n")
        if not raw:
            break
        name, _, value = raw.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(method=method, path=path, headers=headers, body=body)


@contextlib.asynccontextmanager
async def receiving(behave: Behaviour | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(behave)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
