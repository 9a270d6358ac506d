# The image both the API and the worker run (compose.yaml picks the command).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv

WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
# Dependencies first, from the lockfile: a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY clipo_gql ./clipo_gql
COPY worker.py schema.graphql ./
RUN uv sync --frozen --no-dev

RUN useradd --system --uid 10001 --no-create-home clipo \
    && mkdir -p /data/media && chown clipo /data/media
USER clipo
ENV PATH="/app/.venv/bin:$PATH" MEDIA_DIR=/data/media
EXPOSE 8000
CMD ["clipo-gql", "serve", "--host", "0.0.0.0", "--port", "8000"]
