// The detail view's player. It plays a video's HLS ladder once the API publishes one
// (`hlsUrl`), with hls.js where the browser has Media Source Extensions, else the browser's
// own HLS, and the MP4 (`streamUrl`) until then or when neither can. Around the <video>: a
// quality menu (hls.js only) and a seek bar of our own that shows storyboard previews, since
// the native controls' bar cannot be hooked. It knows nothing of GraphQL: app.js hands it
// Video objects as the API sends them.

const HLS_TYPE = "application/vnd.apple.mpegurl";

/** A media URL without its signed token: the same file under a fresh token is not a new source. */
function sourceKey(url) {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname;
}

/** 75.5 -> "1:15", 3725 -> "1:02:05". */
export function formatTime(seconds) {
  const whole = Math.max(0, Math.floor(seconds || 0));
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** "720p · 2.8 Mbps", or "240p · 450 kbps". */
export function rungLabel(height, bitRate) {
  const rate = bitRate >= 1e6 ? `${(bitRate / 1e6).toFixed(1)} Mbps` : `${Math.round(bitRate / 1e3)} kbps`;
  return `${height}p · ${rate}`;
}

// --- the storyboard ---------------------------------------------------------------------

/** "00:01:02.500" or "01:02.500" in seconds. */
function cueTime(stamp) {
  return stamp.split(":").reduce((total, part) => total * 60 + Number(part), 0);
}

/**
 * The cues of a storyboard WebVTT file: `{ start, end, image, x, y, w, h }`, one per tile,
 * where each cue's text is a sprite URL (relative to the VTT's) ending in `#xywh=x,y,w,h`.
 */
export function parseStoryboard(text, vttUrl) {
  const cues = [];
  for (const block of text.replace(/\r\n?/g, "\n").split(/\n{2,}/)) {
    const lines = block.split("\n");
    const timing = lines.findIndex((line) => line.includes("-->"));
    const payload = lines[timing + 1]?.trim();
    if (timing < 0 || !payload) continue;
    const [start, end] = lines[timing].split("-->").map((side) => cueTime(side.trim().split(/\s+/)[0]));
    const image = new URL(payload, vttUrl);
    const xywh = /^#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(image.hash);
    if (!xywh || !(end > start)) continue;
    image.hash = "";
    const [x, y, w, h] = xywh.slice(1).map(Number);
    cues.push({ start, end, image: image.href, x, y, w, h });
  }
  return cues;
}

// --- the player -------------------------------------------------------------------------

/**
 * Drive the player elements: `video`, `seek` (a range input), `preview` (the popup above it,
 * with a `.tile` and a `.time` inside), `quality` (a select) and `qualityBox` (what hides it).
 * `onMessage(text)` reports what the viewer should know (e.g. HLS failed, the MP4 plays).
 */
export function createPlayer({ video, seek, preview, quality, qualityBox, onMessage }) {
  let hls = null; // the hls.js instance while it plays
  let hlsEvents = null; // Hls.Events, once hls.js is loaded
  let loaded = null; // { id, key, kind } of the source asked for last ("hls" | "native" | "mp4")
  let generation = 0; // bumped by every load and unload: a load that finishes late is dropped
  let deferred = null; // a Video whose HLS waits for the viewer to pause the MP4
  const hlsFailed = new Set(); // ids whose HLS failed: they stay on the MP4
  let hlsUnplayable = false; // neither hls.js nor the browser plays HLS: always the MP4
  const storyboards = new Map(); // video id -> Promise of its cues (fetched once per video)
  let cues = []; // the shown video's storyboard
  let dragging = false;

  // hls.js is 1.5 MB: loaded the first time a video has a ladder, never for the list alone.
  let hlsModule = null;
  function loadHlsJs() {
    hlsModule ??= import("hls.js").then(
      (module) => module.default,
      () => {
        onMessage("hls.js did not load (run npm ci in frontend-example/): playing the MP4");
        return null;
      },
    );
    return hlsModule;
  }

  /** How this browser plays HLS: hls.js first (it has the quality menu), then its own. */
  async function hlsEngine() {
    const Hls = await loadHlsJs();
    if (Hls?.isSupported()) return "hls";
    return video.canPlayType(HLS_TYPE) ? "native" : "mp4";
  }

  function playing() {
    return !video.paused && !video.ended;
  }

  function teardown() {
    hls?.destroy();
    hls = null;
    qualityBox.hidden = true;
    delete video.dataset.level;
    video.removeAttribute("src");
  }

  /** Stop playing and forget the source (leaving the detail view, or no media yet). */
  function unload() {
    generation += 1;
    deferred = null;
    loaded = null;
    cues = [];
    hidePreview();
    const had = video.hasAttribute("src") || hls;
    teardown();
    delete video.dataset.engine;
    delete video.dataset.source;
    if (had) video.load(); // aborts the download of what played
    updateSeek();
  }

  function playFile(url, kind, position) {
    teardown();
    video.dataset.engine = kind;
    video.dataset.source = url;
    video.src = url;
    if (position > 0) {
      const resume = () => video.dataset.source === url && (video.currentTime = position);
      video.addEventListener("loadedmetadata", resume, { once: true });
    }
  }

  function playHlsJs(Hls, videoObj, position) {
    teardown();
    video.dataset.engine = "hls";
    video.dataset.source = videoObj.hlsUrl;
    // The ESM build has no inlined worker: its remuxer runs on the page, which for fMP4
    // segments is little work (they are copied into the buffer, not transcoded).
    const instance = new Hls({ startPosition: position > 0 ? position : -1 });
    hls = instance;
    hlsEvents = Hls.Events;
    let recovered = false;
    instance.on(Hls.Events.MANIFEST_PARSED, () => fillQuality(instance));
    instance.on(Hls.Events.LEVEL_SWITCHED, (_event, { level }) => showLevel(instance, level));
    instance.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal || hls !== instance) return;
      // A decoding fault is often fixed by hls.js re-creating its buffers; once.
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
        recovered = true;
        instance.recoverMediaError();
        return;
      }
      hlsFailed.add(videoObj.id);
      onMessage(`The adaptive stream failed (${data.details}): playing the MP4 instead`);
      const at = video.currentTime;
      if (videoObj.streamUrl) {
        loaded = { id: videoObj.id, key: sourceKey(videoObj.streamUrl), kind: "mp4" };
        playFile(videoObj.streamUrl, "mp4", at);
      } else teardown();
    });
    instance.attachMedia(video);
    instance.loadSource(videoObj.hlsUrl);
  }

  // --- the quality menu

  function fillQuality(instance) {
    const rungs = instance.levels
      // AVERAGE-BANDWIDTH: the measured average the API's `renditions` give too (BANDWIDTH
      // is the peak segment's).
      .map((level, index) => ({ index, height: level.height, bitRate: level.averageBitrate }))
      .sort((a, b) => b.height - a.height || b.bitRate - a.bitRate);
    quality.replaceChildren(
      new Option("Auto", "-1"),
      ...rungs.map((rung) => new Option(rungLabel(rung.height, rung.bitRate), String(rung.index))),
    );
    quality.value = instance.autoLevelEnabled ? "-1" : String(instance.currentLevel);
    qualityBox.hidden = false;
  }

  function showLevel(instance, level) {
    video.dataset.level = String(level);
    // In auto mode, say which rung hls.js picked.
    const rung = instance.levels[level];
    const auto = quality.options[0];
    if (auto) auto.textContent = instance.autoLevelEnabled && rung ? `Auto (${rung.height}p)` : "Auto";
  }

  quality.onchange = () => {
    if (!hls) return;
    const instance = hls;
    // A rung (or -1, auto) flushes the whole buffer and refills it from that rung at once.
    instance.currentLevel = Number(quality.value);
    if (quality.value === "-1") quality.options[0].textContent = "Auto";
    // Chromium then shows no new frame until the next keyframe, up to a segment later while
    // the sound goes on: seeking to where we are makes it decode from the keyframe before.
    instance.once(hlsEvents.FRAG_BUFFERED, () => {
      if (hls === instance && !video.seeking) video.currentTime = video.currentTime;
    });
  };

  // --- the seek bar and its previews

  function updateSeek() {
    const duration = Number.isFinite(video.duration) ? video.duration : 0;
    seek.max = String(duration);
    seek.disabled = !duration;
    if (!dragging) seek.value = String(video.currentTime);
    seek.setAttribute("aria-valuetext", `${formatTime(video.currentTime)} of ${formatTime(duration)}`);
  }

  function cueAt(time) {
    return cues.find((cue) => time >= cue.start && time < cue.end) ?? cues.at(-1);
  }

  function showPreview(time) {
    const duration = Number(seek.max);
    if (!duration) return hidePreview();
    const tile = preview.querySelector(".tile");
    const cue = cueAt(time);
    tile.hidden = !cue;
    if (cue) {
      tile.style.width = `${cue.w}px`;
      tile.style.height = `${cue.h}px`;
      tile.style.backgroundImage = `url("${cue.image}")`;
      tile.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    }
    preview.querySelector(".time").textContent = formatTime(time);
    preview.dataset.time = String(time); // for tests and tools
    preview.hidden = false;
    // Centred over the time it shows, but never past the bar's ends.
    const bar = seek.getBoundingClientRect();
    const half = preview.offsetWidth / 2;
    const x = (time / duration) * bar.width;
    preview.style.left = `${Math.min(Math.max(x, half), Math.max(half, bar.width - half))}px`;
  }

  function hidePreview() {
    preview.hidden = true;
  }

  for (const event of ["timeupdate", "durationchange", "loadedmetadata", "seeking", "emptied"])
    video.addEventListener(event, updateSeek);
  // A mouse hovering: the time under the pointer.
  seek.addEventListener("pointermove", (event) => {
    if (event.pointerType !== "mouse" || dragging) return;
    const bar = seek.getBoundingClientRect();
    const fraction = Math.min(Math.max((event.clientX - bar.left) / bar.width, 0), 1);
    showPreview(fraction * Number(seek.max));
  });
  seek.addEventListener("pointerleave", (event) => {
    if (!dragging || event.pointerType === "mouse") hidePreview();
  });
  // Dragging (a finger, the mouse or the keyboard): the time the thumb is at, and seek there.
  seek.addEventListener("input", () => {
    dragging = true;
    video.currentTime = Number(seek.value);
    showPreview(Number(seek.value));
  });
  seek.addEventListener("change", () => {
    dragging = false;
    if (!seek.matches(":hover")) hidePreview();
  });
  seek.addEventListener("pointerup", (event) => event.pointerType !== "mouse" && hidePreview());
  // step="any" would make an arrow key move 1 % of the video: 5 s is what players do.
  // (Home, End, PageUp and PageDown keep the range input's own behaviour.)
  seek.addEventListener("keydown", (event) => {
    const step = { ArrowLeft: -5, ArrowDown: -5, ArrowRight: 5, ArrowUp: 5 }[event.key];
    if (!step || !Number(seek.max)) return;
    event.preventDefault();
    video.currentTime = Math.min(Math.max(video.currentTime + step, 0), Number(seek.max));
  });
  seek.addEventListener("blur", hidePreview);

  function loadStoryboard(videoObj) {
    if (!videoObj.storyboardUrl) return;
    if (!storyboards.has(videoObj.id)) {
      const url = videoObj.storyboardUrl;
      storyboards.set(
        videoObj.id,
        fetch(url)
          .then((response) => (response.ok ? response.text() : ""))
          .then((text) => parseStoryboard(text, url))
          .catch(() => []), // no previews, the time alone
      );
    }
    const id = videoObj.id;
    storyboards.get(id).then((found) => {
      if (loaded?.id === id) cues = found;
    });
  }

  // --- choosing what to play

  /**
   * Show `videoObj` (a Video from the API), called with every update it gets. Loads a new
   * source only when it changes: the MP4 first, its HLS when `hlsUrl` appears. That switch
   * keeps the position and waits while the MP4 plays: it happens when the viewer pauses.
   */
  function show(videoObj) {
    const wantsHls = videoObj.hlsUrl && !hlsUnplayable && !hlsFailed.has(videoObj.id);
    const url = wantsHls ? videoObj.hlsUrl : videoObj.streamUrl;
    if (!url) return unload();
    const sameVideo = loaded?.id === videoObj.id;
    if (!sameVideo) unload();
    video.poster = videoObj.thumbnailUrl ?? "";
    loadStoryboard(videoObj);

    const key = sourceKey(url);
    if (sameVideo && loaded.key === key) return; // the same source (maybe a fresh token)
    if (sameVideo && wantsHls && loaded.kind === "mp4" && playing()) {
      deferred = videoObj;
      return;
    }
    deferred = null;
    // Where the same video was (the MP4 before its HLS), read when the new source loads.
    const position = () => (sameVideo && !video.ended ? video.currentTime : 0);
    const kind = wantsHls ? "hls" : "mp4";
    loaded = { id: videoObj.id, key, kind };
    const current = ++generation;
    if (kind === "mp4") return playFile(url, "mp4", position());
    hlsEngine().then(async (engine) => {
      if (current !== generation) return;
      loaded.kind = engine;
      if (engine === "hls") playHlsJs(await loadHlsJs(), videoObj, position());
      else if (engine === "native") playFile(url, "native", position());
      else {
        // Neither plays HLS here: the MP4, from now on.
        hlsUnplayable = true;
        if (!videoObj.streamUrl) return unload();
        loaded.key = sourceKey(videoObj.streamUrl);
        const playingNow = video.dataset.source && sourceKey(video.dataset.source);
        if (playingNow !== loaded.key) playFile(videoObj.streamUrl, "mp4", position());
      }
    });
  }

  video.addEventListener("pause", () => {
    if (!deferred) return;
    const waiting = deferred;
    deferred = null;
    show(waiting);
  });

  return {
    show,
    unload,
    /** For tests and tools: the hls.js instance while one plays, else null. */
    get hls() {
      return hls;
    },
  };
}
