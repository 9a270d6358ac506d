"""The prepared frames fan-out writes (RFC 6455, section 5.2)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from clipo_gql.ws_protocol import text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_builds(length: int):
    payload = b"x" * length
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
