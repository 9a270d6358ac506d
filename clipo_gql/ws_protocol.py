"""uvicorn's websocket protocol (websockets, sans-I/O), able to write a prepared frame at once.

A state fanned out to a thousand subscribers is one message per socket. Through ASGI each of
them is an awaited `send` down Starlette, the middleware and uvicorn, where websockets builds
the frame again (bench row 6). `send_frame`, offered to the application in the scope's
extensions under `SEND_FRAME`, writes a frame the caller built (fanout.py builds one per
subscriber from one encoded payload) synchronously, or refuses when that socket would have to
wait; the caller then sends through ASGI as usual.

Selected with uvicorn's `ws=` option (WEBSOCKET_OPTIONS); under any other server the extension is
absent and every message goes through ASGI.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

SEND_FRAME = "clipo.websocket.send_frame"


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked (server to client) text frame of `payload` (RFC 6455, section 5.2):
    what websockets' `Frame(Opcode.TEXT, payload).serialize(mask=False)` builds, in a
    fraction of its time."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = b"\x81\x7e" + length.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + length.to_bytes(8, "big")
    return header + payload


class FrameWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only when the upgrade goes on to the app
        if scope is not None:
            scope["extensions"][SEND_FRAME] = self.send_frame

    def send_frame(self, frame: bytes) -> bool:
        """Write `frame` now; False (nothing written) unless the connection is open, accepted
        by the app, not closing, without extensions (a deflated connection's frames are
        built by websockets) and its transport is not holding writes back."""
        if (
            not self.writable.is_set()
            or not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True


# uvicorn's websocket options for every server of the app: `clipo-gql serve`/`dev` (cli.py)
# and the tests' servers, so that what the tests see is what is served.
WEBSOCKET_OPTIONS: dict[str, Any] = {
    "ws": FrameWebSocketProtocol,
    "ws_max_size": 1024 * 1024,
    # Status messages are a few hundred bytes; compressing each one for each subscriber was a
    # tenth of the CPU of a fan-out to a thousand of them (bench row 6).
    "ws_per_message_deflate": False,
}
