# The image both the API and the worker run (compose.yaml picks the command).
FROM python:3.11-slim AS app

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

# GraphiQL's browser files (clipo_gql/graphiql/), from its lockfile: only the ones the API
# serves (graphiql.ASSETS), not the 60 MB of node_modules.
FROM node:20-slim AS graphiql
WORKDIR /graphiql
COPY clipo_gql/graphiql/package.json clipo_gql/graphiql/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && mkdir /out && cd node_modules && cp --parents \
       graphiql/graphiql.min.js graphiql/graphiql.min.css \
       react/umd/react.production.min.js react-dom/umd/react-dom.production.min.js \
       @graphiql/plugin-explorer/dist/index.umd.js @graphiql/plugin-explorer/dist/style.css \
       /out/

FROM app
COPY --from=graphiql /out/ /app/clipo_gql/graphiql/node_modules/
