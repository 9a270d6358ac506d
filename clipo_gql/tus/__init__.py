"""Resumable uploads: a tus 1.0.0 server (https://tus.io/protocols/resumable-upload) at
`/uploads`, with the extensions creation, creation-with-upload, termination, expiration and
checksum (api-next.md § D).

- `protocol.py`   the protocol's headers, versions, extensions and header parsing
- `uploads.py`    creating an upload (a video in UPLOADING) and receiving a chunk of it
- `lock.py`       one PATCH at a time per upload, across API processes (a Redis lease)
- `completion.py` after the last byte: the original in place, PENDING, the job queued once
- `expiry.py`     the worker's periodic removal of uploads that stopped receiving bytes
- `routes.py`     the Starlette endpoints
- `graphql.py`    `createUpload`, the same creation through GraphQL

The upload id is the video id. The state (length, offset, expiry) lives on the video's
document; the bytes in the video's folder (`Storage.upload_partial`), so any API process
sharing MEDIA_DIR can take the next PATCH, and deleting the video ends the upload.
"""
