"""One video event, turned into a GraphQL result once and shared by every subscriber.

A change of a video watched by a thousand clients reaches this process once, and the hub
decodes it once. Without sharing, every subscriber would still build its own `types.Video`
and run graphql-core over its selection, which was most of the fan-out cost (bench row 6).
Here the subscribers of one state get one payload object (`shared_view`), and the executor
keeps the result per payload, operation and variables: the first subscriber of a query pays,
the others reuse it.

The subscribers of one video then get the states after their first one from `DirectQueue`,
as the hub hands each event to them (one loop over all of them): the result is looked up,
its JSON (once per result) framed with the subscriber's operation id, and the frame written
to the socket (ws_protocol.py). Strawberry's per-operation pipeline, a task woken per
subscriber and the ASGI send stay out of it. Whatever this path cannot send at once (a final
state, a re-read, a result with errors, a socket that is not writable) goes to the queue,
and the subscription's own task sends it the usual way; the contract (videos.watch) is kept
because this path only ever sends a newer, non-final state to an armed subscriber, and the
task sends nothing while armed.

Sharing is correct because a `types.Video` field is a pure function of the payload (the
per-request base URL and the signed URLs' expiry are part of the payload's key; a signed URL
is bound to the video, not to the viewer). Access is checked before a subscriber gets its
first state (ownership.py): a field that read `info.context` would have to leave this path.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from graphql import ExecutionResult, Executor, OperationDefinitionNode
from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from clipo_gql import models
from clipo_gql.auth.media_links import MediaLinks
from clipo_gql.types import Video
from clipo_gql.videos import EventQueue, VideoEvent
from clipo_gql.ws_protocol import text_frame

log = logging.getLogger(__name__)

# Sharing only matters in the burst of deliveries right after an event, so few states are
# kept; and few distinct queries per state, so that odd query texts cannot pile results up.
VIEWS_KEPT = 64
RESULTS_PER_VIEW = 16

_Results = dict[tuple[int, str], tuple[OperationDefinitionNode, ExecutionResult]]
_views: OrderedDict[tuple[object, int, str, int], Video] = OrderedDict()
# id(view) -> results, for the views in `_views` only: those are alive, so no id is reused.
_results: dict[int, _Results] = {}


class _Encoding:
    """A shared result's data, with the JSON of its payload (`{"data": ...}`) once a message
    needed it, and that JSON's UTF-8 once a direct send needed it."""

    __slots__ = ("_raw", "_text", "data")

    def __init__(self, data: object) -> None:
        self.data = data
        self._text: str | None = None
        self._raw: bytes | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = _dumps({"data": self.data})
        return self._text

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.text().encode()
        return self._raw


# id(result.data) -> its _Encoding, for the results in `_results` only, for the same reason.
_encoded: dict[int, _Encoding] = {}


def _encoding_of(data: object) -> _Encoding | None:
    entry = _encoded.get(id(data))
    return entry if entry is not None and entry.data is data else None


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

    def event_result(self, payload: Any) -> ExecutionResult | None:
        """This subscription's result for `payload`, shared with its other subscribers; None
        when it would have to be awaited (not expected: Video's fields are plain)."""
        result = self._per_event(payload).execute_operation(False)
        if isinstance(result, ExecutionResult):
            return result
        close = getattr(result, "close", None)  # a coroutine never awaited would warn
        if close is not None:
            close()
        return None

    @cached_property
    def _memo_key(self) -> tuple[int, str]:
        # Once per subscription (per-event executors are copies that inherit it). A parser
        # cache makes every subscriber of one query text share the operation node.
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=repr)
        return id(self.operation), variables

    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        # In the subscription's task, for its first state: DirectQueue finds it here later.
        if _executor.get() is not self:
            _executor.set(self)
        return self._per_event(payload)

    def _per_event(self, payload: Any) -> Executor[Any]:
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
                    _encoded[id(result.data)] = _Encoding(result.data)
        return result


_executor: ContextVar[SharedEventExecutor | None] = ContextVar("clipo_executor", default=None)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Where a subscription's states can be sent without its task (graphql_view.py makes one
    per operation, for its subprotocol)."""

    head: bytes  # the message's JSON up to its payload, e.g. `{"id":"1","type":"next","payload":`
    alive: Callable[[], bool]  # the operation still runs (not completed, stopped or replaced)
    send_frame: Callable[[bytes], bool]  # write a frame now, or False: ws_protocol.py


SUBSCRIBER: ContextVar[Subscriber | None] = ContextVar("clipo_subscriber", default=None)


def message_head(kind: str, operation_id: str, *, id_first: bool) -> bytes:
    """The JSON before the payload of a `next` (graphql-transport-ws: id first) or legacy
    `data` message (type first), as `json.dumps(message, separators=(",", ":"))` writes it."""
    fields = (
        (("id", operation_id), ("type", kind))
        if id_first
        else (("type", kind), ("id", operation_id))
    )
    return ("{" + "".join(f"{_dumps(k)}:{_dumps(v)}," for k, v in fields) + '"payload":').encode()


class DirectQueue(EventQueue):
    """A subscriber's queue that sends, as the hub hands it each event, the states it can.

    Armed by `waiting` (when its task waits with nothing queued, and Strawberry already sent
    what the subscriber has), it sends a newer non-final state itself and drops an older one;
    anything else disarms it and is queued for the task, which re-arms it once that is sent.
    """

    def __init__(self, base_url: str, links: MediaLinks) -> None:
        super().__init__()
        self._base_url = base_url
        self._links = links
        self._armed = False
        self._has: models.Video | None = None  # what the subscriber has, while armed
        self._target: tuple[SharedEventExecutor, Subscriber] | None = None

    def waiting(self, video: models.Video) -> None:
        if self._target is None:
            executor, subscriber = _executor.get(), SUBSCRIBER.get()
            if executor is None or subscriber is None:
                return  # not served by our handlers and executor: the plain path
            self._target = (executor, subscriber)
        self._has = video
        self._armed = self.empty()

    def seen(self, video: models.Video) -> models.Video:
        has = self._has
        return has if has is not None and has.version > video.version else video

    def put_nowait(self, item: VideoEvent | None) -> None:
        if self._armed:
            has = self._has
            assert has is not None
            if isinstance(item, models.Video) and not item.status.is_final:
                if item.version <= has.version:
                    return  # what the task would do: nothing newer
                if self._send(item):
                    self._has = item
                    return
            self._armed = False
        super().put_nowait(item)

    def _send(self, doc: models.Video) -> bool:
        assert self._target is not None
        executor, subscriber = self._target
        # One subscriber's failure must not stop the hub's loop: its task tries the usual way.
        try:
            if not subscriber.alive():
                return False
            if doc is not _handing_out.doc:  # the hub hands every subscriber the same object
                _handing_out.doc = doc
                _handing_out.frames = {}
            # The subscribers of one query, host and operation id share one frame.
            key = (self._base_url, executor._memo_key, subscriber.head)
            frame = _handing_out.frames.get(key, _UNKNOWN)
            if frame is _UNKNOWN:
                payload = self._payload(executor, doc)
                frame = None if payload is None else text_frame(subscriber.head + payload + b"}")
                _handing_out.frames[key] = frame
            if frame is None:
                return False
            return subscriber.send_frame(frame)
        except Exception:
            log.exception("direct send of video %s failed; sending it the usual way", doc.id)
            return False

    def _payload(self, executor: SharedEventExecutor, doc: models.Video) -> bytes | None:
        result = executor.event_result(shared_view(doc, self._base_url, self._links))
        if result is None or result.errors or result.data is None:
            return None  # Strawberry reports errors (and logs the unexpected ones)
        entry = _encoding_of(result.data)
        return None if entry is None else entry.raw()


class _HandingOut:
    """The frames of the event the hub is handing out, per (host, query and variables,
    message head): all but the first subscriber of each skip the look-ups of the view, the
    result and the JSON, and building the frame."""

    doc: object = None
    frames: dict[tuple[str, tuple[int, str], bytes], bytes | None] = {}


_handing_out = _HandingOut()
_UNKNOWN = b""  # never a frame


def encode_shared(message: Mapping[str, object]) -> str | None:
    """The JSON of a subscription message (`next`, or the legacy `data`) whose data is a
    shared result, with that data encoded once for all its subscribers; None for any other
    message. Byte for byte what `json.dumps(message, separators=(",", ":"))` writes."""
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.keys() != {"data"}:
        return None
    entry = _encoding_of(payload["data"])
    if entry is None:
        return None
    text = entry.text()
    fields = (f"{_dumps(k)}:{text if k == 'payload' else _dumps(v)}" for k, v in message.items())
    return "{" + ",".join(fields) + "}"


def _dumps(value: object) -> str:
    # The keys, the message type and the usual operation ids ("1", a uuid) need no escaping:
    # skipping json.dumps for them halves this function's cost per subscriber.
    if isinstance(value, str) and value.isascii() and value.replace("-", "").isalnum():
        return f'"{value}"'
    return json.dumps(value, separators=(",", ":"))
