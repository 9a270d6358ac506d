// The page: an upload area, the list of videos (live), a detail view (at #<video id>), and
// the Operations view (at #operations). All API calls are in api.js; this file only turns
// their results into DOM.
import { createApi, unfinishedUploads } from "./api.js";
import { createPlayer, rungLabel } from "./player.js";

// Reached only once every import loaded (index.html explains the page otherwise).
window.clipoStarted = true;

// The bearer token, when the API runs with AUTH_MODE=required: opened as `#token=...`
// (what `clipo-gql dev --auth` prints), or pasted into the sign-in form. Kept in
// sessionStorage (this tab only, gone when it closes) and taken out of the address bar.
const TOKEN_KEY = "clipo-token";
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice("#token=".length)));
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(TOKEN_KEY);

// Served by clipo-gql the API is the page's own origin; elsewhere, open the page with
// ?api=http://127.0.0.1:8000 (and list this page's origin in the API's ALLOWED_ORIGINS).
const api = createApi(new URLSearchParams(location.search).get("api") ?? location.origin, {
  token,
});

/** An API error as a person reads it: signed out and not allowed say what to do. */
function explain(error) {
  if (error.code === "UNAUTHENTICATED") return `Signed out: ${error.message}. Sign in above.`;
  if (error.code === "FORBIDDEN") return `Not allowed: ${error.message}`;
  return error.message;
}
// The detail view's player (player.js): HLS with a quality menu, storyboard previews.
const player = createPlayer({
  video: document.getElementById("player"),
  seek: document.getElementById("seek"),
  preview: document.getElementById("preview"),
  quality: document.getElementById("quality"),
  qualityBox: document.getElementById("quality-box"),
  onMessage: (text) => showMessage(text, "info"),
});
// For tests and tools: `window.__clipoPlayer.hls` is the hls.js instance while one plays.
window.__clipoPlayer = player;

const PAGE_SIZE = 12;
const FINISHED = new Set(["DONE", "FAILED"]);
// The statuses with a progress bar: bytes received (UPLOADING), then the job's progress.
const PROGRESSING = new Set(["UPLOADING", "PROCESSING"]);

const $ = (id) => document.getElementById(id);
const videos = new Map(); // id -> the latest Video the API sent
const following = new Map(); // id -> function that ends its subscription
let endCursor = null;
let totalCount = 0;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function formatBytes(bytes) {
  if (bytes == null) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

function summary(video) {
  return [
    video.durationText,
    video.width && `${video.width}×${video.height}`,
    formatBytes(video.sizeBytes),
    video.source === "URL" && !video.sizeBytes ? "from URL" : "",
  ]
    .filter(Boolean)
    .join(" · ");
}

// --- messages -------------------------------------------------------------------------

function showMessage(text, kind = "error", list = $("messages")) {
  const close = h("button", { type: "button", "aria-label": "Dismiss" }, "×");
  const item = h("li", { class: kind, role: kind === "error" ? "alert" : "status" }, text, close);
  close.onclick = () => item.remove();
  list.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

// --- the list -------------------------------------------------------------------------

function updateCount() {
  $("total").textContent = totalCount ? `(${totalCount})` : "";
  $("empty").hidden = videos.size > 0;
}

function renderRow(video) {
  let row = document.querySelector(`#videos [data-id="${video.id}"]`);
  if (!row) {
    row = h("li", { class: "video", "data-id": video.id });
    row.onclick = () => (location.hash = video.id);
  }
  const thumb = video.thumbnailUrl
    ? h("img", { class: "thumb", src: video.thumbnailUrl, alt: "", loading: "lazy" })
    : h("div", { class: "thumb placeholder" });
  const progress = h("progress", { max: "1", value: String(video.progress ?? 0) });
  progress.hidden = !PROGRESSING.has(video.status);
  row.replaceChildren(
    thumb,
    h(
      "div",
      { class: "text" },
      h("a", { class: "name", href: `#${video.id}` }, video.filename),
      h("span", { class: "meta" }, video.status === "FAILED" ? video.error ?? "" : summary(video)),
      progress,
    ),
    h("span", { class: `badge ${video.status.toLowerCase()}` }, video.status),
  );
  return row;
}

/** Record a video's new state and show it wherever it appears. */
function show(video, { prepend = false } = {}) {
  const known = videos.has(video.id);
  videos.set(video.id, video);
  const row = renderRow(video);
  if (!known) (prepend ? $("videos").prepend(row) : $("videos").append(row));
  if (!FINISHED.has(video.status)) follow(video.id);
  if (location.hash.slice(1) === video.id) renderDetail(video);
  updateCount();
}

function forget(id) {
  following.get(id)?.();
  following.delete(id);
  videos.delete(id);
  document.querySelector(`#videos [data-id="${id}"]`)?.remove();
  totalCount = Math.max(0, totalCount - 1);
  updateCount();
}

/** Live updates for one video until the server completes the subscription (DONE/FAILED). */
function follow(id) {
  if (following.has(id)) return;
  const stop = api.watch(id, {
    onVideo: (video) => show(video),
    onEnd: () => following.delete(id),
    onError: (error) => {
      following.delete(id);
      if (error.code === "NOT_FOUND") forget(id);
      else showMessage(`Live updates stopped: ${explain(error)}`);
    },
  });
  following.set(id, stop);
}

async function loadMore() {
  const button = $("load-more");
  button.disabled = true;
  try {
    const page = await api.videos(PAGE_SIZE, endCursor);
    totalCount = page.totalCount;
    for (const { node } of page.edges) if (!videos.has(node.id)) show(node);
    endCursor = page.pageInfo.endCursor;
    button.hidden = !page.pageInfo.hasNextPage;
    updateCount();
  } catch (error) {
    showMessage(`Could not load videos: ${explain(error)}`);
  } finally {
    button.disabled = false;
  }
}

// --- adding videos --------------------------------------------------------------------

/** The simple upload: one GraphQL multipart request (no pause, no resume). */
function uploadMultipart(file, row, bar, sent) {
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  row.querySelector(".actions").append(cancel);
  const { done, abort } = api.upload(file, (loaded, total) => {
    bar.value = total ? loaded / total : 0;
    sent.textContent = `${formatBytes(loaded)} of ${formatBytes(total)}`;
  });
  cancel.onclick = abort;
  done
    .then((video) => {
      totalCount += 1;
      show(video, { prepend: true });
    })
    .catch((error) => {
      if (error.code !== "CANCELLED") showMessage(`${file.name}: ${explain(error)}`);
    })
    .finally(() => row.remove());
}

/** Show the upload's video as soon as it exists: it then goes UPLOADING → … → DONE live. */
async function showUploading(id) {
  if (videos.has(id)) return follow(id);
  try {
    const video = await api.video(id);
    if (!video || videos.has(id)) return;
    totalCount += 1;
    show(video, { prepend: true });
  } catch {
    // the subscription below reports what is wrong
  }
}

/** A resumable upload (tus): Pause/Resume, automatic retries, resume after a reload. */
function uploadResumable(file, row, bar, sent) {
  const pause = h("button", { type: "button", class: "secondary pause" }, "Pause");
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  row.querySelector(".actions").append(pause, cancel);
  let videoId = null;
  const upload = api.tusUpload(file, {
    onVideoId: (id) => {
      videoId = id;
      row.dataset.videoId = id;
      document.querySelector(`#resumable [data-video-id="${id}"]`)?.remove();
      showUploading(id);
    },
    onProgress: (loaded, total) => {
      bar.value = total ? loaded / total : 0;
      sent.textContent = `${formatBytes(loaded)} of ${formatBytes(total)}`;
    },
  });
  upload.resumed.then((resumed) => {
    if (resumed) row.dataset.resumed = "true";
  });
  pause.onclick = () => {
    const paused = row.dataset.paused === "true";
    row.dataset.paused = String(!paused);
    pause.textContent = paused ? "Pause" : "Resume";
    if (paused) upload.resume();
    else upload.pause();
  };
  cancel.onclick = () => upload.cancel();
  upload.done
    .catch(async (error) => {
      if (error.code !== "CANCELLED") showMessage(`${file.name}: ${explain(error)}`);
      // A refused or cancelled upload's video is removed by the server: so is its row.
      if (videoId && videos.has(videoId)) {
        const video = await api.video(videoId).catch(() => undefined);
        if (video === null) forget(videoId);
      }
    })
    .finally(() => row.remove());
}

function uploadFiles(files) {
  const simple = $("simple-upload").checked || !api.tusAvailable;
  for (const file of files) {
    const bar = h("progress", { max: "1", value: "0" });
    const sent = h("span", { class: "meta" }, `0 of ${formatBytes(file.size)}`);
    const row = h(
      "li",
      { "data-kind": simple ? "multipart" : "tus" },
      h("span", { class: "name" }, file.name),
      h("span", { class: "actions" }),
      bar,
      sent,
    );
    $("uploads").append(row);
    if (simple) uploadMultipart(file, row, bar, sent);
    else uploadResumable(file, row, bar, sent);
  }
}

/** Uploads this browser left unfinished (a reload, a closed tab): picking the file resumes. */
async function listUnfinished() {
  const list = $("resumable");
  const entries = await unfinishedUploads().catch(() => []);
  list.replaceChildren(
    ...entries.map((entry) =>
      h(
        "li",
        { "data-video-id": entry.videoId },
        h("span", { class: "name" }, entry.filename || entry.videoId),
        h("span", { class: "meta" }, `unfinished (${formatBytes(entry.size)}): pick the file again to resume`),
      ),
    ),
  );
  list.hidden = entries.length === 0;
}

function setUpDropzone() {
  const zone = $("dropzone");
  const input = $("file-input");
  input.onchange = () => {
    uploadFiles([...input.files]);
    input.value = "";
  };
  zone.ondragover = (event) => {
    event.preventDefault();
    zone.classList.add("over");
  };
  zone.ondragleave = () => zone.classList.remove("over");
  zone.ondrop = (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadFiles([...event.dataTransfer.files]);
  };
}

function setUpUrlForm() {
  const form = $("url-form");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const video = await api.submitUrl($("url-input").value.trim());
      totalCount += 1;
      show(video, { prepend: true });
      form.reset();
    } catch (error) {
      showMessage(`That URL was refused: ${explain(error)}`);
    } finally {
      button.disabled = false;
    }
  };
}

// --- the detail view ------------------------------------------------------------------

function fact(term, value) {
  return value == null || value === "" ? [] : [h("dt", {}, term), h("dd", {}, String(value))];
}

function renderDetail(video) {
  $("detail").hidden = false;
  $("detail-name").textContent = video.filename;
  const badge = $("detail-status");
  badge.textContent = video.status;
  badge.className = `badge ${video.status.toLowerCase()}`;
  $("detail-progress").hidden = !PROGRESSING.has(video.status);
  $("detail-progress").value = video.progress ?? 0;
  $("detail-error").hidden = !video.error;
  $("detail-error").textContent = video.error ?? "";

  // Called with every update: the player reloads only when the source changes.
  $("player-box").hidden = !video.streamUrl && !video.hlsUrl;
  player.show(video);

  $("detail-facts").replaceChildren(
    ...fact("Duration", video.durationText),
    ...fact("Size", video.width && `${video.width} × ${video.height}`),
    ...fact("Video", video.videoCodec),
    ...fact("Audio", video.videoCodec && (video.audioCodec ?? "none")),
    ...fact("Frame rate", video.frameRate && `${video.frameRate.toFixed(2)} fps`),
    ...fact("Container", video.formatName),
    ...fact("Streams", video.renditions?.map((r) => rungLabel(r.height, r.bitRate)).join(", ")),
    ...fact("File", formatBytes(video.sizeBytes)),
    ...fact("Source", video.sourceUrl ?? "upload"),
    ...fact("Added", new Date(video.createdAt).toLocaleString()),
  );

  $("detail-links").hidden = !video.downloadUrl;
  $("download-video").href = video.downloadUrl ?? "";
  $("download-metadata").href = video.metadataDownloadUrl ?? "";
  $("view-metadata").href = video.metadataUrl ?? "";
  $("retry").hidden = video.status !== "FAILED";
}

async function openFromHash() {
  const id = location.hash.slice(1);
  if (!id) {
    $("detail").hidden = true;
    player.unload();
    return;
  }
  let video = videos.get(id);
  if (!video) {
    try {
      video = await api.video(id);
    } catch (error) {
      showMessage(`Could not open that video: ${explain(error)}`);
      return;
    }
    if (!video) {
      showMessage("That video no longer exists");
      location.hash = "";
      return;
    }
    if (!FINISHED.has(video.status)) follow(video.id);
  }
  renderDetail(video);
}

function setUpDetail() {
  $("retry").onclick = async () => {
    try {
      show(await api.retry(location.hash.slice(1)));
    } catch (error) {
      showMessage(`Retry failed: ${explain(error)}`);
    }
  };
  $("delete").onclick = async () => {
    const id = location.hash.slice(1);
    if (!confirm(`Delete “${videos.get(id)?.filename ?? id}” and all its files?`)) return;
    try {
      await api.remove(id);
      forget(id);
      location.hash = "";
      showMessage("Video deleted", "info");
    } catch (error) {
      showMessage(`Delete failed: ${explain(error)}`);
    }
  };
}

// --- the operations view --------------------------------------------------------------
// For admins: the queue polled every POLL_MS while the view is shown (and the tab visible),
// each running video followed live over the websocket, and the latest failures with Retry.

const POLL_MS = 2000;
const ops = {
  shown: false,
  poll: 0, // bumped by every refresh and by hiding: an older answer that arrives late is dropped
  timer: null,
  following: new Map(), // running video id -> function that ends its subscription
  running: new Map(), // running video id -> the latest Video its subscription sent
  failuresShown: "", // the failures on screen, to leave them (and a Retry being clicked) alone
};

function ago(time) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(time)) / 1000));
  return seconds < 90 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function stat(label, value, name) {
  return h("span", {}, `${label} `, h("strong", { class: name }, String(value)));
}

function runningRow(id) {
  const video = ops.running.get(id);
  const progress = video?.progress ?? 0;
  return h(
    "li",
    { "data-video-id": id },
    h("a", { class: "name", href: `#${id}` }, video?.filename ?? id),
    h("progress", { max: "1", value: String(progress) }),
    h("span", { class: "meta" }, video ? `${video.status} · ${Math.round(progress * 100)} %` : ""),
  );
}

function renderWorker(worker) {
  const running = worker.runningVideoIds;
  return h(
    "li",
    { class: "worker", "data-id": worker.id },
    h("span", { class: "name" }, worker.host),
    h(
      "p",
      { class: "meta" },
      stat("pid", worker.pid, "pid"),
      stat("started", new Date(worker.startedAt).toLocaleString(), "started"),
      stat("last seen", ago(worker.lastSeenAt), "seen"),
      stat("done", worker.jobsDone, "jobs-done"),
      stat("failed", worker.jobsFailed, "jobs-failed"),
    ),
    running.length
      ? h("ul", { class: "running" }, ...running.map(runningRow))
      : h("p", { class: "meta" }, "Idle"),
  );
}

/** Follow the videos the workers run now, and stop following the ones they no longer run. */
function followRunning(workers) {
  const now = new Set(workers.flatMap((worker) => worker.runningVideoIds));
  for (const [id, stop] of ops.following) {
    if (now.has(id)) continue;
    stop();
    ops.following.delete(id);
    ops.running.delete(id);
  }
  for (const id of now) {
    if (ops.following.has(id)) continue;
    const update = (video) => {
      ops.running.set(id, video);
      document.querySelector(`#ops-workers [data-video-id="${id}"]`)?.replaceWith(runningRow(id));
    };
    // It ends by itself after DONE or FAILED; an error shows up in the next poll instead.
    ops.following.set(id, api.watch(id, { onVideo: update, onError: () => {} }));
  }
}

function failureRow(video) {
  const retry = h("button", { type: "button", class: "secondary" }, "Retry");
  const row = h(
    "li",
    { "data-id": video.id },
    h("a", { class: "name", href: `#${video.id}` }, video.filename),
    h("span", { class: "error-text" }, video.error ?? ""),
    retry,
  );
  retry.onclick = async () => {
    retry.disabled = true;
    try {
      const queued = await api.retry(video.id);
      if (videos.has(queued.id)) show(queued); // the list follows it again
      row.remove();
      ops.failuresShown = "";
      refreshOperations();
    } catch (error) {
      retry.disabled = false;
      showMessage(`Retry failed: ${explain(error)}`, "error", $("ops-messages"));
    }
  };
  return row;
}

function renderOperations({ queue, failed }) {
  $("ops-queued").textContent = queue.queued;
  $("ops-running").textContent = queue.running;
  $("ops-no-workers").hidden = queue.workers.length > 0;
  followRunning(queue.workers);
  $("ops-workers").replaceChildren(...queue.workers.map(renderWorker));

  const failures = failed.edges.map((edge) => edge.node);
  const shown = JSON.stringify(failures.map((video) => [video.id, video.error]));
  if (shown === ops.failuresShown) return;
  ops.failuresShown = shown;
  $("ops-no-failures").hidden = failures.length > 0;
  $("ops-failures").replaceChildren(...failures.map(failureRow));
}

async function refreshOperations() {
  clearTimeout(ops.timer);
  const poll = ++ops.poll;
  let again = true;
  if (!document.hidden) {
    try {
      const answer = await api.operations();
      if (poll !== ops.poll) return;
      renderOperations(answer);
      $("ops-error").hidden = true;
      $("ops-content").hidden = false;
    } catch (error) {
      if (poll !== ops.poll) return;
      // Not an admin (or signed out): asking again every 2 s would not change the answer.
      again = error.code !== "FORBIDDEN" && error.code !== "UNAUTHENTICATED";
      $("ops-error").textContent =
        error.code === "FORBIDDEN"
          ? "The Operations view is for admins: sign in with an admin's token to see the queue."
          : `Could not load the queue: ${explain(error)}`;
      $("ops-error").hidden = false;
      $("ops-content").hidden = !again; // a passing network fault keeps the last state shown
    }
  }
  if (again) ops.timer = setTimeout(refreshOperations, POLL_MS);
}

function hideOperations() {
  ops.poll += 1;
  clearTimeout(ops.timer);
  for (const stop of ops.following.values()) stop();
  ops.following.clear();
  ops.running.clear();
}

/** Show the view the address names: #operations, else the list (and #<id>'s detail). */
async function route() {
  const operations = location.hash === "#operations";
  document.querySelector("main").hidden = operations;
  $("operations").hidden = !operations;
  for (const [link, current] of [["nav-videos", !operations], ["nav-operations", operations]]) {
    if (current) $(link).setAttribute("aria-current", "page");
    else $(link).removeAttribute("aria-current");
  }
  ops.shown = operations;
  if (operations) {
    player.unload();
    await refreshOperations();
  } else {
    hideOperations();
    await openFromHash();
  }
}

async function setUpSignIn() {
  const form = $("sign-in");
  const who = $("who");
  $("sign-out").onclick = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  };
  form.onsubmit = (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    location.reload();
  };
  try {
    const me = await api.me();
    who.textContent = token() ? `Signed in as ${me.ownerId}${me.admin ? " (admin)" : ""}` : "";
    $("sign-out").hidden = !token();
    form.hidden = true;
  } catch (error) {
    if (error.code !== "UNAUTHENTICATED") return; // reported by the list below
    who.textContent = token() ? "Your token was refused." : "This server needs a token.";
    form.hidden = false;
  }
}

await setUpSignIn();
setUpDropzone();
setUpUrlForm();
setUpDetail();
listUnfinished();
$("load-more").onclick = loadMore;
// A tab hidden for a while shows a fresh state when it comes back, not one 2 s later.
document.addEventListener("visibilitychange", () => {
  if (ops.shown && !document.hidden) refreshOperations();
});
window.onhashchange = route;
await loadMore();
await route();
// For tests and tools: the first page of videos is on screen.
document.body.dataset.ready = "true";
