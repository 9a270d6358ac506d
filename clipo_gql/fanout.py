"""One video event, turned into a GraphQL result once and shared by every subscriber.

A change of a video watched by a thousand clients reaches this process once, and the hub
decodes it once. Without sharing, every subscriber would still build its own `types.Video`
and run graphql-core over its selection, which was most of the fan-out cost (bench row 6).
Here the subscribers of one state get one payload object (`shared_view`), and the executor
keeps the result per payload, operation and variables: the first subscriber of a query pays,
the others reuse it.

Sharing is correct because a `types.Video` field is a pure function of the payload (the
per-request base URL and the signed URLs' expiry are part of the payload's key; a signed URL
is bound to the video, not to the viewer). Access is checked before a subscriber gets its
first state (ownership.py): a field that read `info.context` would have to leave this path.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from functools import cached_property
from typing import Any, cast

from graphql import ExecutionResult, Executor, OperationDefinitionNode
from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from clipo_gql import models
from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.types import Video

# Sharing only matters in the burst of deliveries right after an event, so few states are
# kept; and few distinct queries per state, so that odd query texts cannot pile results up.
VIEWS_KEPT = 64
RESULTS_PER_VIEW = 16

_Results = dict[tuple[int, str], tuple[OperationDefinitionNode, ExecutionResult]]
_views: OrderedDict[tuple[object, int, str, int], Video] = OrderedDict()
# id(view) -> results, for the views in `_views` only: those are alive, so no id is reused.
_results: dict[int, _Results] = {}
# id(result.data) -> (that data, its JSON once a subscriber's message needed it), for the
# results in `_results` only, for the same reason.
_encoded: dict[int, tuple[object, str | None]] = {}


def shared_view(doc: models.Video, base_url: str, links: MediaLinks) -> Video:
    """The GraphQL object of this state of the video, the same one for every subscriber.

    `version` grows with every stored change, so (id, version) names one state for good. The
    signed URLs' expiry moves in steps (media_links.py), and is part of the key too.
    """
    expiry = links.expiry()
    key = (doc.id, doc.version, base_url, expiry)
    view = _views.get(key)
    if view is None:
        view = _views[key] = Video.from_document(doc, base_url, links, expiry)
        _results[id(view)] = {}
        if len(_views) > VIEWS_KEPT:
            _, oldest = _views.popitem(last=False)
            for _, result in _results.pop(id(oldest)).values():
                _encoded.pop(id(result.data), None)
    else:
        _views.move_to_end(key)
    return view


def _memo_of(payload: object) -> _Results | None:
    """The shared results of a payload from `shared_view`; None for any other root value."""
    return _results.get(id(payload)) if isinstance(payload, Video) else None


class _Replay:
    """Stands in for a per-event executor whose result is already known."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self.result


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Runs a subscription event once per (payload, operation, variables)."""

    @cached_property
    def _memo_key(self) -> tuple[int, str]:
        # Once per subscription (per-event executors are copies that inherit it). A parser
        # cache makes every subscriber of one query text share the operation node.
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=repr)
        return id(self.operation), variables

    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        memo = _memo_of(payload)
        if memo is not None:
            found = memo.get(self._memo_key)
            # The node is kept beside the result, so that a reused id() can never match.
            if found is not None and found[0] is self.operation:
                # Skips copying this executor too, which graphql-core does for every event.
                return cast("Executor[Any]", _Replay(found[1]))
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        result = super().execute_operation(serially)
        memo = _memo_of(self.root_value)
        # An awaitable result is not shared; Video's fields are plain, so none is expected.
        if memo is not None and isinstance(result, ExecutionResult):
            if len(memo) < RESULTS_PER_VIEW:
                memo[self._memo_key] = (self.operation, result)
                if result.data is not None:
                    _encoded[id(result.data)] = (result.data, None)
        return result


def encode_shared(message: Mapping[str, object]) -> str | None:
    """The JSON of a subscription message (`next`, or the legacy `data`) whose data is a
    shared result, with that data encoded once for all its subscribers; None for any other
    message. Byte for byte what `json.dumps(message, separators=(",", ":"))` writes."""
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.keys() != {"data"}:
        return None
    data = payload["data"]
    entry = _encoded.get(id(data))
    if entry is None or entry[0] is not data:
        return None
    text = entry[1]
    if text is None:
        text = _dumps(payload)
        _encoded[id(data)] = (data, text)
    fields = (f"{_dumps(k)}:{text if k == 'payload' else _dumps(v)}" for k, v in message.items())
    return "{" + ",".join(fields) + "}"


def _dumps(value: object) -> str:
    # The keys, the message type and the usual operation ids ("1", a uuid) need no escaping:
    # skipping json.dumps for them halves this function's cost per subscriber.
    if isinstance(value, str) and value.isascii() and value.replace("-", "").isalnum():
        return f'"{value}"'
    return json.dumps(value, separators=(",", ":"))
