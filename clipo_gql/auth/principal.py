"""The caller, as every access check sees it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from clipo_gql.models import ANONYMOUS_OWNER


@dataclass(frozen=True)
class Principal:
    owner_id: str
    admin: bool = False
    # When the credential stops being valid (a JWT's exp); None: until revoked.
    expires_at: float | None = None
    via: Literal["off", "jwt", "api_key"] = "off"

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


# With AUTH_MODE=off every caller is this owner (limits then apply per client address).
ANONYMOUS = Principal(ANONYMOUS_OWNER)
