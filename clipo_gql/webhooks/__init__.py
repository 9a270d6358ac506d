"""Webhooks: signed, retried, at-least-once notifications of a video's events to its owner's
endpoints, by the Standard Webhooks specification (v1.0.0, standardwebhooks.com).

- `events.py`    the event types, their ids and the body (`{"type", "timestamp", "data"}`)
- `endpoints.py` creating, listing and deleting an owner's endpoints (URL checked by ssrf.py)
- `dispatch.py`  from a video's outbox (written with the change) to one delivery per endpoint
- `sender.py`    one signed POST through the SSRF policy's pinned connection
- `jobs.py`      the delivery job, its retry schedule and its own arq worker and queue
- `graphql.py`   the GraphQL types, queries and mutations
"""
