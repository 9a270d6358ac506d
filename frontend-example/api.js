// Everything this page says to clipo-gql, in one place: plain fetch for queries and
// mutations, tus-js-client for resumable uploads (the tus server at /uploads), XMLHttpRequest
// for the simple GraphQL multipart upload (fetch cannot report upload progress), and the
// graphql-ws client for the live `videoStatus` subscription.
import { createClient } from "graphql-ws";

// tus-js-client's browser bundle (dist/tus.min.js, a classic script in index.html: its ES
// module build imports bare package names a browser cannot resolve without a bundler).
// Missing, the page falls back to the multipart upload.
const tus = globalThis.tus?.isSupported ? globalThis.tus : null;

/** The tus chunk size: 8 MiB, or `?tusChunk=<bytes>` (tests use small chunks to pause). */
export const TUS_CHUNK_BYTES =
  Number(new URLSearchParams(location.search).get("tusChunk")) || 8 * 1024 * 1024;
// Automatic retries after a network error or a 5xx (and 409/423: another PATCH holds the
// upload): the delays in ms between attempts; a 4xx answer is final and shown.
const TUS_RETRY_DELAYS = [0, 1000, 3000, 5000, 10_000, 20_000];
const TUS_CODES = { 404: "NOT_FOUND", 410: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA" };

/** tus-js-client's error as a person reads it: the server's `{"error": ...}` when it sent one. */
function tusError(error) {
  const response = error?.originalResponse;
  if (!response) {
    return new ApiError("The upload was cut off: the connection to the server broke", "NETWORK");
  }
  const status = response.getStatus();
  let message = null;
  try {
    message = JSON.parse(response.getBody() || "null")?.error ?? null;
  } catch {
    // not JSON (a proxy's page): reported from the status
  }
  const code = status === 401 ? "UNAUTHENTICATED" : status === 403 ? "FORBIDDEN" : TUS_CODES[status];
  return new ApiError(message ?? `The upload server answered HTTP ${status}`, code ?? "INTERNAL");
}

// Answers after which the upload no longer exists on the server.
const GONE = new Set([404, 410, 413, 415]);

/** Drop `upload`'s entries from the fingerprint store. */
async function forget(upload) {
  const storage = tus.defaultOptions.urlStorage;
  for (const entry of await upload.findPreviousUploads().catch(() => [])) {
    await storage.removeUpload(entry.urlStorageKey).catch(() => {});
  }
}

/** The video id in an upload URL (`/uploads/{id}`: the upload is its video's). */
function videoIdOf(uploadUrl) {
  return new URL(uploadUrl, location.href).pathname.split("/").filter(Boolean).pop();
}

/**
 * Uploads this browser started and did not finish (tus-js-client's fingerprint store in
 * localStorage): `[{ filename, size, uploadUrl, videoId }]`. Picking the same file again
 * resumes it.
 */
export async function unfinishedUploads() {
  if (!tus?.canStoreURLs) return [];
  const entries = await tus.defaultOptions.urlStorage.findAllUploads();
  return entries
    .filter((entry) => entry.uploadUrl)
    .map((entry) => ({
      filename: entry.metadata?.filename ?? "",
      size: entry.size,
      uploadUrl: entry.uploadUrl,
      videoId: videoIdOf(entry.uploadUrl),
    }));
}

export const VIDEO_FIELDS = `
  id filename source sourceUrl status progress error createdAt
  sizeBytes duration durationText width height videoCodec audioCodec frameRate formatName
  thumbnailUrl streamUrl downloadUrl metadataUrl metadataDownloadUrl
  hlsUrl storyboardUrl renditions { width height bitRate }`;

const ENDPOINT_FIELDS = "id url events createdAt";
const DELIVERY_FIELDS =
  "id eventId eventType status attempts lastStatusCode lastError nextAttemptAt createdAt";

/** An error the API answered with: `code` is its `extensions.code` (e.g. PAYLOAD_TOO_LARGE). */
export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function firstError(body, status) {
  const error = body?.errors?.[0];
  if (error) return new ApiError(error.message, error.extensions?.code ?? "INTERNAL");
  return new ApiError(`The server answered HTTP ${status} without a GraphQL result`, "INTERNAL");
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * A client for the API at `baseUrl` (the page's own origin when served by clipo-gql).
 * `token()` returns the bearer token to send (a JWT or an API key), or null when the server
 * runs with AUTH_MODE=off. It goes on every request, the upload, and the websocket's
 * `connection_init`; media URLs in the answers carry signed tokens of their own.
 */
export function createApi(baseUrl, { token = () => null } = {}) {
  const httpUrl = new URL("/graphql", baseUrl);
  const wsUrl = new URL(httpUrl);
  wsUrl.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:";

  function authorization() {
    const value = token();
    return value ? { authorization: `Bearer ${value}` } : {};
  }

  // One websocket for every subscription on the page. `lazy` opens it with the first
  // subscription; after a dropped connection the client reconnects and re-subscribes, and the
  // server answers each subscription with the video's current state first, so nothing is missed.
  const ws = createClient({
    url: wsUrl.href,
    // Read at every (re)connection, so a new token is used from the next one on.
    connectionParams: () => authorization(),
    retryAttempts: Infinity,
    // Every drop is retried, except a refused credential (4403): that needs a new token.
    shouldRetry: (event) => event?.code !== 4403,
    retryWait: (retries) => new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** retries, 10_000))),
  });

  async function request(query, variables = {}) {
    let response;
    try {
      response = await fetch(httpUrl, {
        method: "POST",
        headers: { "content-type": "application/json", ...authorization() },
        body: JSON.stringify({ query, variables }),
      });
    } catch {
      throw new ApiError("Cannot reach the server; is clipo-gql running?", "NETWORK");
    }
    const body = await readJson(response);
    if (!body?.data || body.errors?.length) throw firstError(body, response.status);
    return body.data;
  }

  /**
   * Upload one file with the GraphQL multipart request spec. Returns `{ done, abort }`:
   * `done` resolves to the new (PENDING) video; `onProgress(sent, total)` follows the bytes.
   */
  function upload(file, onProgress) {
    const form = new FormData();
    form.append(
      "operations",
      JSON.stringify({
        query: `mutation ($file: Upload!) { uploadVideo(file: $file) { ${VIDEO_FIELDS} } }`,
        variables: { file: null },
      }),
    );
    form.append("map", JSON.stringify({ 0: ["variables.file"] }));
    form.append("0", file, file.name);

    const xhr = new XMLHttpRequest();
    const done = new Promise((resolve, reject) => {
      xhr.upload.onprogress = (event) => onProgress(event.loaded, event.total || file.size);
      xhr.onload = () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // not JSON: reported below from the status
        }
        if (body?.data?.uploadVideo) resolve(body.data.uploadVideo);
        else reject(firstError(body, xhr.status));
      };
      // The server may answer 413 and close before the browser has sent everything; the
      // browser then reports a network error, not the answer.
      xhr.onerror = () =>
        reject(new ApiError("The upload was cut off: the connection to the server broke", "NETWORK"));
      xhr.onabort = () => reject(new ApiError("Upload cancelled", "CANCELLED"));
    });
    xhr.open("POST", httpUrl);
    // Required by the API for multipart requests: a plain HTML form cannot set it, which is
    // what stops cross-site form posts (CSRF).
    xhr.setRequestHeader("apollo-require-preflight", "true");
    for (const [name, value] of Object.entries(authorization())) xhr.setRequestHeader(name, value);
    xhr.send(form);
    return { done, abort: () => xhr.abort() };
  }

  /**
   * Upload one file through tus, resuming this browser's earlier upload of the same file
   * (same name, type, size and modification time) when there is one. Returns
   * `{ done, pause, resume, cancel, resumed }`: `done` resolves once every byte is stored
   * (the video is PENDING then); `onVideoId(id)` is called as soon as the video exists (the
   * creation's `Clipo-Video-Id`, or the resumed upload's URL); `onProgress(sent, total)`.
   * `resumed` resolves to whether an earlier upload is continued.
   */
  function tusUpload(file, { onProgress, onVideoId, chunkSize = TUS_CHUNK_BYTES }) {
    let announced = null;
    const announce = (id) => {
      if (id && id !== announced) {
        announced = id;
        onVideoId(id);
      }
    };
    let settle;
    const done = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const upload = new tus.Upload(file, {
      endpoint: new URL("/uploads", baseUrl).href,
      chunkSize,
      retryDelays: TUS_RETRY_DELAYS,
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      // The fingerprint store keeps the upload's URL until it is complete (for a reload).
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      // Read at every request: a new token is used from the next chunk on.
      onBeforeRequest: (req) => {
        for (const [name, value] of Object.entries(authorization())) req.setHeader(name, value);
      },
      onAfterResponse: (req, res) => {
        const created = res.getHeader("Clipo-Video-Id");
        if (created) announce(created);
        else if (req.getMethod() === "HEAD" && res.getStatus() === 200) announce(videoIdOf(req.getURL()));
      },
      onProgress: (sent, total) => onProgress(sent, total),
      onSuccess: () => settle.resolve(announced),
      onError: async (error) => {
        // The server removed this upload (refused, expired, gone): resuming it cannot work.
        if (GONE.has(error?.originalResponse?.getStatus())) await forget(upload);
        settle.reject(tusError(error));
      },
    });
    const resumed = upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
      return previous.length > 0;
    });
    return {
      done,
      resumed,
      /** Stop sending; the server keeps what it has (HEAD tells `resume` where to go on). */
      pause: () => upload.abort(false),
      resume: () => upload.start(),
      /** End the upload: the server removes its bytes and its video (tus termination). */
      cancel: async () => {
        await upload.abort(true).catch(() => {});
        settle.reject(new ApiError("Upload cancelled", "CANCELLED"));
      },
    };
  }

  return {
    /** Who the server takes us for: `{ ownerId, admin }`; UNAUTHENTICATED when signed out. */
    async me() {
      const data = await request(`{ me { ownerId admin } }`);
      return data.me;
    },

    /** Drop the live connection: the next subscription connects again (with a new token). */
    reconnect() {
      ws.terminate();
    },

    async videos(first, after = null) {
      const data = await request(
        `query ($first: Int!, $after: String) {
          videos(first: $first, after: $after) {
            totalCount
            edges { node { ${VIDEO_FIELDS} } }
            pageInfo { hasNextPage endCursor }
          }
        }`,
        { first, after },
      );
      return data.videos;
    },

    /**
     * The Operations view's poll, in one request: the queue and its workers, and the latest
     * FAILED videos. Only admins may read `queue` (FORBIDDEN otherwise, when auth is on).
     */
    async operations(failures = 10) {
      return request(
        `query ($failures: Int!) {
          queue {
            queued running
            workers { id host pid startedAt lastSeenAt runningVideoIds jobsDone jobsFailed }
          }
          failed: videos(first: $failures, status: FAILED) { edges { node { id filename error } } }
        }`,
        { failures },
      );
    },

    async video(id) {
      const data = await request(`query ($id: ID!) { video(id: $id) { ${VIDEO_FIELDS} } }`, { id });
      return data.video;
    },

    async submitUrl(url) {
      const data = await request(
        `mutation ($url: String!) { submitVideo(url: $url) { ${VIDEO_FIELDS} } }`,
        { url },
      );
      return data.submitVideo;
    },

    async retry(id) {
      const data = await request(`mutation ($id: ID!) { retryVideo(id: $id) { ${VIDEO_FIELDS} } }`, {
        id,
      });
      return data.retryVideo;
    },

    async remove(id) {
      const data = await request(`mutation ($id: ID!) { deleteVideo(id: $id) }`, { id });
      return data.deleteVideo;
    },

    // --- webhooks (the Webhooks view): endpoints, their signing secret, their deliveries ---

    /** Your endpoints, oldest first: `[{ id, url, events, createdAt }]`. */
    async webhookEndpoints() {
      const data = await request(`{ webhookEndpoints { ${ENDPOINT_FIELDS} } }`);
      return data.webhookEndpoints;
    },

    /**
     * Add an endpoint for `events` (all of them when null). Resolves to `{ secret, endpoint }`:
     * the signing secret is in this answer only, the server never shows it again.
     * FORBIDDEN_URL (a URL the server will not post to) and QUOTA_EXCEEDED carry a message.
     */
    async createWebhookEndpoint(url, events = null) {
      const data = await request(
        `mutation ($url: String!, $events: [WebhookEventType!]) {
          createWebhookEndpoint(url: $url, events: $events) { secret endpoint { ${ENDPOINT_FIELDS} } }
        }`,
        { url, events },
      );
      return data.createWebhookEndpoint;
    },

    /** Remove an endpoint and its delivery log; false when it was not there. */
    async deleteWebhookEndpoint(id) {
      const data = await request(`mutation ($id: ID!) { deleteWebhookEndpoint(id: $id) }`, { id });
      return data.deleteWebhookEndpoint;
    },

    /** An endpoint's latest deliveries, newest first (NOT_FOUND once it is deleted). */
    async webhookDeliveries(endpointId, first = 20) {
      const data = await request(
        `query ($id: ID!, $first: Int) { webhookDeliveries(endpointId: $id, first: $first) { ${DELIVERY_FIELDS} } }`,
        { id: endpointId, first },
      );
      return data.webhookDeliveries;
    },

    /** Send a delivery again now (same `webhook-id`, a fresh retry schedule): it is PENDING. */
    async redeliverWebhook(deliveryId) {
      const data = await request(
        `mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) { ${DELIVERY_FIELDS} } }`,
        { id: deliveryId },
      );
      return data.redeliverWebhook;
    },

    upload,
    /** Whether resumable uploads are available (tus-js-client loaded and the browser able). */
    tusAvailable: tus !== null,
    tusUpload,

    /**
     * Follow one video live: `onVideo` gets its current state at once, then every change.
     * The server completes the subscription after DONE or FAILED (or when the video is
     * deleted); `onEnd` is called then. Returns a function that stops following.
     */
    watch(id, { onVideo, onError, onEnd }) {
      return ws.subscribe(
        {
          query: `subscription ($id: ID!) { videoStatus(id: $id) { ${VIDEO_FIELDS} } }`,
          variables: { id },
        },
        {
          next: (result) => {
            if (result.data?.videoStatus) onVideo(result.data.videoStatus);
            else if (result.errors?.length) onError?.(firstError(result, 200));
          },
          // GraphQL errors arrive as an array; anything else is a connection the client gave up on.
          error: (error) =>
            onError?.(
              Array.isArray(error)
                ? firstError({ errors: error }, 200)
                : error?.code === 4403
                  ? new ApiError("Signed out: the server refused the live connection", "UNAUTHENTICATED")
                  : new ApiError("Lost the live connection to the server", "NETWORK"),
            ),
          complete: () => onEnd?.(),
        },
      );
    },
  };
}
