"""The arq entry point: `arq worker.WorkerSettings` (or `clipo-gql worker`) runs a worker."""

from clipo_gql.settings import Settings
from clipo_gql.tasks import worker_settings

WorkerSettings = worker_settings(Settings())
