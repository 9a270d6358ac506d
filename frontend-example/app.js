// The page: an upload area, the list of videos (live), a detail view (at #<video id>), the
// Operations view (at #operations) and the Webhooks view (at #webhooks). All API calls are in api.js; this file only turns
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

// --- messages and announcements -------------------------------------------------------

/**
 * Tell screen readers `text`: politely (after what they are reading) or, for errors, at once.
 * The two live regions exist from the start (index.html), as live regions must; each keeps
 * its last few lines, so that two changes in a row are both read.
 */
function announce(text, { assertive = false } = {}) {
  const region = $(assertive ? "alerts" : "announcements");
  region.append(h("p", {}, text));
  while (region.children.length > 3) region.firstElementChild.remove();
}

function showMessage(text, kind = "error", list = $("messages")) {
  const close = h("button", { type: "button", "aria-label": "Dismiss" }, "×");
  const item = h("li", { class: kind }, text, close);
  close.onclick = () => item.remove();
  list.append(item);
  announce(text, { assertive: kind === "error" });
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

// How a status is said, after the video's name.
const SAID = {
  UPLOADING: "uploading",
  PENDING: "uploaded, waiting to be processed",
  PROCESSING: "processing",
  DONE: "ready to play",
  FAILED: "failed",
};

/** Progress in quarters: what is announced, so a screen reader is not read every tick. */
const quarter = (progress) => Math.floor((progress ?? 0) * 4);

/** Announce what changed between two states of a video: its status, or processing a quarter. */
function announceChange(before, video) {
  if (before.status !== video.status) {
    const error = video.status === "FAILED" && video.error ? `: ${video.error}` : "";
    announce(`${video.filename}: ${SAID[video.status] ?? video.status}${error}`);
  } else if (video.status === "PROCESSING" && quarter(video.progress) > quarter(before.progress)) {
    announce(`${video.filename}: processing, ${Math.round(video.progress * 100)} %`);
  }
}

// --- the list -------------------------------------------------------------------------

function updateCount() {
  $("total").textContent = totalCount ? `(${totalCount})` : "";
  $("empty").hidden = videos.size > 0;
}

/** A video's row, built once and then updated in place: its link keeps the keyboard focus. */
function renderRow(video) {
  let row = document.querySelector(`#videos [data-id="${video.id}"]`);
  if (!row) {
    row = h(
      "li",
      { class: "video", "data-id": video.id },
      h("div", { class: "thumb placeholder" }),
      h(
        "div",
        { class: "text" },
        h("a", { class: "name", href: `#${video.id}` }),
        h("span", { class: "meta" }),
        h("progress", { max: "1", value: "0" }),
      ),
      h("span", { class: "badge" }),
    );
    row.onclick = (event) => {
      if (!event.target.closest("a")) location.hash = video.id; // the link goes there itself
    };
  }
  const thumb = row.querySelector(".thumb");
  if (video.thumbnailUrl && thumb.getAttribute("src") !== video.thumbnailUrl) {
    thumb.replaceWith(h("img", { class: "thumb", src: video.thumbnailUrl, alt: "", loading: "lazy" }));
  }
  row.querySelector(".name").textContent = video.filename;
  row.querySelector(".meta").textContent =
    video.status === "FAILED" ? video.error ?? "" : summary(video);
  const progress = row.querySelector("progress");
  progress.value = video.progress ?? 0;
  progress.hidden = !PROGRESSING.has(video.status);
  progress.setAttribute("aria-label", `Progress of ${video.filename}`);
  const badge = row.querySelector(".badge");
  badge.className = `badge ${video.status.toLowerCase()}`;
  if (badge.textContent !== video.status) badge.textContent = video.status;
  return row;
}

/** Arrow keys (and Home, End) move between the rows' links, as Tab and Shift+Tab do. */
function setUpListKeys() {
  $("videos").addEventListener("keydown", (event) => {
    const links = [...$("videos").querySelectorAll("a.name")];
    const at = links.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: links.length - 1 }[event.key];
    if (to === undefined || !links[to]) return;
    event.preventDefault();
    links[to].focus();
  });
}

/** Record a video's new state and show it wherever it appears. */
function show(video, { prepend = false } = {}) {
  const before = videos.get(video.id);
  const known = before !== undefined;
  videos.set(video.id, video);
  if (known) announceChange(before, video);
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
function uploadMultipart(file, row, onProgress) {
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  row.querySelector(".actions").append(cancel);
  const { done, abort } = api.upload(file, onProgress);
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
function uploadResumable(file, row, onProgress) {
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
    onProgress,
  });
  upload.resumed.then((resumed) => {
    if (resumed) row.dataset.resumed = "true";
  });
  pause.onclick = () => {
    const paused = row.dataset.paused === "true";
    row.dataset.paused = String(!paused);
    pause.textContent = paused ? "Pause" : "Resume";
    announce(`${file.name}: upload ${paused ? "resumed" : "paused"}`);
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
    const bar = h("progress", { max: "1", value: "0", "aria-label": `Uploading ${file.name}` });
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
    announce(`Uploading ${file.name}`);
    const onProgress = (loaded, total) => {
      const before = quarter(bar.value);
      bar.value = total ? loaded / total : 0;
      sent.textContent = `${formatBytes(loaded)} of ${formatBytes(total)}`;
      if (quarter(bar.value) > before && bar.value < 1) {
        announce(`${file.name}: ${Math.round(bar.value * 100)} % uploaded`);
      }
    };
    if (simple) uploadMultipart(file, row, onProgress);
    else uploadResumable(file, row, onProgress);
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
  $("detail-progress").setAttribute("aria-label", `Progress of ${video.filename}`);
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

let opened = null; // the id of the video the detail view shows

/** Keyboard focus after the detail view closes: its row's link, else the list's heading. */
function focusList(id) {
  const link = document.querySelector(`#videos [data-id="${id}"] a.name`);
  (link ?? $("library-title")).focus();
}

async function openFromHash() {
  const id = location.hash.slice(1);
  const closed = opened;
  opened = id || null;
  if (!id) {
    $("detail").hidden = true;
    player.unload();
    // Only if the focus was in the detail view (or went with a button it removed).
    const focus = document.activeElement;
    if (closed && ($("detail").contains(focus) || focus === document.body)) focusList(closed);
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
  if (location.hash.slice(1) !== id) return; // another one was opened meanwhile
  renderDetail(video);
  // Where a keyboard user goes next: the video's name, then its player and buttons.
  if (id !== closed) $("detail-name").focus({ preventScroll: true });
}

function setUpDetail() {
  $("detail").addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (document.fullscreenElement) return; // Escape leaves full screen first
    location.hash = "";
  });
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

/** Run `redraw` (which rebuilds the workers' rows), the focus staying on the same video's link. */
function keepingFocus(redraw) {
  const focused = document.activeElement?.closest("#ops-workers [data-video-id]")?.dataset.videoId;
  redraw();
  if (focused) document.querySelector(`#ops-workers [data-video-id="${focused}"] a`)?.focus();
}

function runningRow(id) {
  const video = ops.running.get(id);
  const progress = video?.progress ?? 0;
  return h(
    "li",
    { "data-video-id": id },
    h("a", { class: "name", href: `#${id}` }, video?.filename ?? id),
    h("progress", {
      max: "1",
      value: String(progress),
      "aria-label": `Progress of ${video?.filename ?? id}`,
    }),
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
      keepingFocus(() =>
        document.querySelector(`#ops-workers [data-video-id="${id}"]`)?.replaceWith(runningRow(id)),
      );
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
  keepingFocus(() => $("ops-workers").replaceChildren(...queue.workers.map(renderWorker)));

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

// --- the webhooks view ----------------------------------------------------------------
// Your endpoints (add, delete), a new endpoint's signing secret shown once, and the selected
// endpoint's latest deliveries (polled every HOOKS_POLL_MS while the view is shown) with
// Redeliver. Every result and error goes to one aria-live status line.

const HOOKS_POLL_MS = 3000;
const EVENT_NAMES = {
  VIDEO_CREATED: "created",
  VIDEO_READY: "ready",
  VIDEO_FAILED: "failed",
  VIDEO_DELETED: "deleted",
};
const hooks = {
  shown: false,
  poll: 0, // bumped by every refresh and by hiding: an older answer that arrives late is dropped
  timer: null,
  endpoints: [],
  selected: null, // the endpoint whose deliveries are listed
};

function hooksStatus(text, kind = "info") {
  const line = $("hooks-status");
  line.textContent = text;
  line.className = `status-line ${kind}`;
}

function when(time) {
  return time ? h("time", { datetime: time }, new Date(time).toLocaleString()) : "–";
}

/** The secret, once: in this box only (never in storage), emptied when put away. */
function showSecret(created) {
  $("hook-secret").dataset.endpointId = created.endpoint.id;
  $("hook-secret-url").textContent = created.endpoint.url;
  $("hook-secret-value").textContent = created.secret;
  $("hook-secret").hidden = false;
  $("hook-secret-copy").focus();
}

function hideSecret() {
  $("hook-secret").hidden = true;
  delete $("hook-secret").dataset.endpointId;
  $("hook-secret-value").textContent = "";
  $("hook-secret-url").textContent = "";
}

async function copySecret() {
  const secret = $("hook-secret-value").textContent;
  try {
    await navigator.clipboard.writeText(secret);
    hooksStatus("Secret copied to the clipboard");
  } catch {
    // No clipboard access (an insecure origin, a refused permission): select it for Ctrl+C.
    getSelection().selectAllChildren($("hook-secret-value"));
    hooksStatus("Could not copy: the secret is selected, press Ctrl+C (⌘C) to copy it", "error");
  }
}

function eventList(events) {
  return events.length === Object.keys(EVENT_NAMES).length
    ? "all events"
    : events.map((type) => EVENT_NAMES[type] ?? type).join(", ");
}

function endpointRow(endpoint) {
  const selected = hooks.selected === endpoint.id;
  const show = h(
    "button",
    { type: "button", class: "secondary show", "aria-pressed": String(selected) },
    "Deliveries",
  );
  const remove = h(
    "button",
    { type: "button", class: "danger delete" },
    "Delete",
    h("span", { class: "visually-hidden" }, ` ${endpoint.url}`),
  );
  show.onclick = () => selectEndpoint(endpoint.id);
  remove.onclick = () => deleteEndpoint(endpoint, remove);
  return h(
    "li",
    { "data-id": endpoint.id, class: selected ? "selected" : "" },
    h("span", { class: "url" }, endpoint.url),
    h(
      "span",
      { class: "meta" },
      h("span", { class: "event-types" }, eventList(endpoint.events)),
      " · added ",
      when(endpoint.createdAt),
    ),
    h("span", { class: "actions" }, show, remove),
  );
}

function renderEndpoints() {
  const known = hooks.endpoints.some((endpoint) => endpoint.id === hooks.selected);
  if (!known) hooks.selected = hooks.endpoints[0]?.id ?? null;
  $("hooks-empty").hidden = hooks.endpoints.length > 0;
  $("hooks-endpoints").replaceChildren(...hooks.endpoints.map(endpointRow));
  const selected = hooks.endpoints.find((endpoint) => endpoint.id === hooks.selected);
  $("hook-deliveries").hidden = !selected;
  $("deliveries-url").textContent = selected ? `To ${selected.url}` : "";
  if (!known) $("deliveries").replaceChildren();
}

/** List `id`'s deliveries; the rows stay (and so does the focus on the pressed button). */
function selectEndpoint(id) {
  if (hooks.selected === id) return;
  hooks.selected = id;
  for (const row of $("hooks-endpoints").children) {
    const selected = row.dataset.id === id;
    row.classList.toggle("selected", selected);
    row.querySelector("button.show").setAttribute("aria-pressed", String(selected));
  }
  const endpoint = hooks.endpoints.find((known) => known.id === id);
  $("deliveries-url").textContent = `To ${endpoint.url}`;
  $("deliveries").replaceChildren();
  $("deliveries-empty").hidden = true;
  refreshDeliveries();
}

/** One delivery's cells, updated in place so a focused Redeliver button keeps its focus. */
function deliveryRow(delivery) {
  let row = document.querySelector(`#deliveries tr[data-id="${delivery.id}"]`);
  if (!row) {
    const redeliver = h("button", { type: "button", class: "secondary redeliver" }, "Redeliver");
    redeliver.onclick = () => redeliverOne(delivery.id, redeliver);
    row = h(
      "tr",
      { "data-id": delivery.id },
      h("th", { scope: "row", class: "event" }),
      h("td", { class: "status" }),
      h("td", { class: "attempts" }),
      h("td", { class: "result" }),
      h("td", { class: "next" }),
      h("td", { class: "created" }),
      h("td", {}, redeliver),
    );
  }
  const cell = (name) => row.querySelector(`.${name}`);
  const status = delivery.status.toLowerCase();
  const last = [delivery.lastStatusCode && `HTTP ${delivery.lastStatusCode}`, delivery.lastError];
  const shown = JSON.stringify(delivery);
  if (row.dataset.shown === shown) return row;
  row.dataset.shown = shown;
  row.dataset.status = delivery.status;
  row.dataset.eventId = delivery.eventId;
  cell("event").textContent = delivery.eventType;
  cell("status").replaceChildren(h("span", { class: `badge ${status}` }, delivery.status));
  cell("attempts").textContent = String(delivery.attempts);
  cell("result").textContent = last.filter(Boolean).join(": ") || "–";
  cell("next").replaceChildren(when(delivery.nextAttemptAt));
  cell("created").replaceChildren(when(delivery.createdAt));
  return row;
}

function renderDeliveries(deliveries) {
  const body = $("deliveries");
  const rows = deliveries.map(deliveryRow);
  // Moved only where the order changed (new ones arrive on top): a moved row loses focus.
  rows.forEach((row, index) => {
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] ?? null);
  });
  while (body.children.length > rows.length) body.lastElementChild.remove();
  $("deliveries-empty").hidden = rows.length > 0;
  $("deliveries-table").hidden = rows.length === 0;
}

/** The selected endpoint's deliveries now, then every HOOKS_POLL_MS while the view is shown. */
async function refreshDeliveries() {
  clearTimeout(hooks.timer);
  const poll = ++hooks.poll;
  const id = hooks.selected;
  if (id && !document.hidden) {
    try {
      const deliveries = await api.webhookDeliveries(id);
      if (poll !== hooks.poll) return;
      renderDeliveries(deliveries);
    } catch (error) {
      if (poll !== hooks.poll) return;
      if (error.code === "NOT_FOUND") {
        // Deleted meanwhile (another tab): list what is there now.
        await loadEndpoints();
        return;
      }
      hooksStatus(`Could not load the deliveries: ${explain(error)}`, "error");
      if (error.code === "UNAUTHENTICATED") return; // asking again would not change the answer
    }
  }
  if (hooks.shown && hooks.selected) hooks.timer = setTimeout(refreshDeliveries, HOOKS_POLL_MS);
}

async function loadEndpoints() {
  try {
    hooks.endpoints = await api.webhookEndpoints();
  } catch (error) {
    hooksStatus(`Could not load the endpoints: ${explain(error)}`, "error");
    return;
  }
  renderEndpoints();
  await refreshDeliveries();
}

async function deleteEndpoint(endpoint, button) {
  if (!confirm(`Delete the webhook endpoint ${endpoint.url}? Nothing more will be sent to it.`)) {
    return;
  }
  button.disabled = true;
  try {
    await api.deleteWebhookEndpoint(endpoint.id);
    hooksStatus(`Endpoint ${endpoint.url} deleted`);
  } catch (error) {
    button.disabled = false;
    hooksStatus(`Could not delete the endpoint: ${explain(error)}`, "error");
    return;
  }
  if ($("hook-secret").dataset.endpointId === endpoint.id) hideSecret();
  await loadEndpoints();
}

async function redeliverOne(id, button) {
  button.disabled = true;
  try {
    const delivery = await api.redeliverWebhook(id);
    deliveryRow(delivery);
    hooksStatus(`${delivery.eventType} is being sent again`);
    // Its result shows with the next poll, a moment from now rather than a full period.
    clearTimeout(hooks.timer);
    hooks.timer = setTimeout(refreshDeliveries, 1000);
  } catch (error) {
    hooksStatus(`Could not redeliver: ${explain(error)}`, "error");
  } finally {
    button.disabled = false;
  }
}

function setUpWebhooks() {
  const form = $("hook-form");
  form.onsubmit = async (event) => {
    event.preventDefault();
    const checked = [...form.querySelectorAll('input[name="events"]:checked')].map((box) => box.value);
    if (checked.length === 0) {
      hooksStatus("Pick at least one event to send to the endpoint", "error");
      return;
    }
    const all = checked.length === Object.keys(EVENT_NAMES).length;
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const created = await api.createWebhookEndpoint($("hook-url").value.trim(), all ? null : checked);
      form.reset(); // back to every event checked
      hooks.selected = created.endpoint.id;
      showSecret(created);
      hooksStatus("Endpoint added: copy its signing secret now, it is shown only once");
      await loadEndpoints();
    } catch (error) {
      hooksStatus(`The endpoint was refused: ${explain(error)}`, "error");
    } finally {
      button.disabled = false;
    }
  };
  $("hook-secret-copy").onclick = copySecret;
  $("hook-secret-done").onclick = () => {
    hideSecret();
    $("hook-url").focus(); // not lost to <body> with the button that had it
  };
  $("deliveries-refresh").onclick = () => refreshDeliveries();
}

async function showWebhooks() {
  hooks.shown = true;
  await loadEndpoints();
}

function hideWebhooks() {
  hooks.shown = false;
  hooks.poll += 1;
  clearTimeout(hooks.timer);
  hideSecret(); // leaving the view is putting the secret away
}

const VIEWS = { "#operations": "operations", "#webhooks": "webhooks" };

/** Show the view the address names: #operations, #webhooks, else the list (and #<id>'s detail). */
async function route() {
  const view = VIEWS[location.hash] ?? "videos";
  document.querySelector("main").hidden = view !== "videos";
  $("operations").hidden = view !== "operations";
  $("webhooks").hidden = view !== "webhooks";
  for (const name of ["videos", "operations", "webhooks"]) {
    const link = $(`nav-${name}`);
    if (name === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view !== "videos") opened = null;
  ops.shown = view === "operations";
  if (view !== "operations") hideOperations();
  if (view !== "webhooks" && hooks.shown) hideWebhooks();
  if (view === "videos") {
    await openFromHash();
    return;
  }
  player.unload();
  if (view === "operations") await refreshOperations();
  else await showWebhooks();
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
setUpListKeys();
setUpWebhooks();
listUnfinished();
$("load-more").onclick = loadMore;
// A tab hidden for a while shows a fresh state when it comes back, not one 2 s later.
document.addEventListener("visibilitychange", () => {
  if (ops.shown && !document.hidden) refreshOperations();
  if (hooks.shown && !document.hidden) refreshDeliveries();
});
window.onhashchange = route;
await loadMore();
await route();
// For tests and tools: the first page of videos is on screen.
document.body.dataset.ready = "true";
