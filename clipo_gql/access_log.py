"""uvicorn's access log, without the signed tokens of media URLs (`?token=...`).

A token opens a file until it expires: logs are read by more people, and kept longer, than
a link should be. uvicorn logs the path with its query string, so the filter rewrites it.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

TOKEN = re.compile(r"([?&]token=)[^&\s]*")


def redact(path: str) -> str:
    return TOKEN.sub(r"\1[redacted]", path)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path with query, HTTP version, status)
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config
