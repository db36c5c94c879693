// The page: chunked upload, transcoding progress, the library and an hls.js player.
// Plain ES module, no build step; every request goes to the gateway (same origin).

const CHUNK_SIZE = 8 * 1024 * 1024;
const PARALLEL_CHUNKS = 3; // enough to fill a link without starving the other tabs
const MAX_RETRIES = 5;
const RETRY_BASE_MS = 500; // doubled per attempt: 0.5, 1, 2, 4, 8 s
const POLL_MS = 1000;
const MAX_POLL_FAILURES = 10; // the job may not exist for a moment right after complete
const FINISHED = new Set(["ok", "failed"]);

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }

  // Network errors, overload and server faults may pass; a 4xx will not change on retry.
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** The ApiError for a failed response, its message from the body's `detail`. */
function apiError(status, statusText, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const detail = body && body.detail ? String(body.detail) : `${status} ${statusText}`.trim();
  return new ApiError(status, body && body.error, detail);
}

/** fetch + JSON, throwing ApiError with the server's `detail` on failure. */
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, { method, body, headers: { Accept: "application/json" } });
  } catch (err) {
    throw new ApiError(0, "network", `network error: ${err.message}`);
  }
  const text = await response.text();
  if (!response.ok) throw apiError(response.status, response.statusText, text);
  return text ? JSON.parse(text) : null;
}

/** A FormData from a plain object. */
function formData(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return form;
}

/** POST a form with XMLHttpRequest, which (unlike fetch) reports upload progress. */
function postWithProgress(path, form, onProgress, active) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    active.add(xhr);
    xhr.open("POST", path);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      active.delete(xhr);
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText || "null"));
      else reject(apiError(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => {
      active.delete(xhr);
      reject(new ApiError(0, "network", "network error while sending a chunk"));
    };
    xhr.onabort = () => {
      active.delete(xhr);
      reject(new ApiError(-1, "aborted", "upload cancelled"));
    };
    xhr.send(form);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- messages

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "";
  const total = Math.round(Number(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// ---------------------------------------------------------------- upload

/** Byte counts of every chunk, sent so far, for one progress bar. */
class UploadProgress {
  constructor(total) {
    this.total = total;
    this.sent = new Map();
  }

  update(index, bytes) {
    this.sent.set(index, bytes);
    let sum = 0;
    for (const value of this.sent.values()) sum += value;
    const shown = Math.min(sum, this.total);
    const percent = this.total ? Math.floor((shown / this.total) * 100) : 100;
    $("upload-progress").value = percent;
    $("upload-text").textContent =
      `${formatBytes(shown)} of ${formatBytes(this.total)} (${percent}%)`;
  }
}

/** Send chunk `index`, retrying transient failures with exponential backoff. */
async function sendChunk(job, index) {
  const { file, uploadId, progress } = job;
  const blob = file.slice(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE);
  for (let attempt = 0; ; attempt += 1) {
    const form = formData({ upload_id: uploadId, index: String(index) });
    form.append("file", blob, `${file.name}.part${index}`);
    try {
      await postWithProgress("/upload/chunk", form, (n) => progress.update(index, n), job.active);
      progress.update(index, blob.size);
      return;
    } catch (err) {
      progress.update(index, 0);
      if (!(err instanceof ApiError) || !err.retryable || attempt >= MAX_RETRIES) throw err;
      // Jitter keeps three parallel retries from hitting a recovering service together.
      await sleep(RETRY_BASE_MS * 2 ** attempt * (0.75 + Math.random() / 2));
      if (job.failed) throw err; // another chunk failed for good while this one waited
    }
  }
}

/** Send every chunk, PARALLEL_CHUNKS at a time; the first hard failure cancels the rest. */
async function sendChunks(uploadId, file, totalChunks) {
  const job = { uploadId, file, progress: new UploadProgress(file.size), active: new Set() };
  job.failed = false;
  let next = 0;
  const worker = async () => {
    while (!job.failed && next < totalChunks) {
      const index = next;
      next += 1;
      await sendChunk(job, index);
    }
  };
  const workers = Array.from({ length: Math.min(PARALLEL_CHUNKS, totalChunks) }, worker);
  try {
    await Promise.all(workers);
  } catch (err) {
    job.failed = true;
    for (const xhr of job.active) xhr.abort();
    throw err;
  }
}

/** Show a transcoding status: overall state, percent and each rung. */
function showTranscodeStatus(status) {
  $("transcode-progress").value = Math.round(status.progress || 0);
  const rungs = Object.entries(status.qualities || {})
    .map(([name, q]) => `${name} ${Math.round(q.progress || 0)}%`)
    .join(", ");
  const error = status.error ? `: ${status.error}` : "";
  $("transcode-text").textContent =
    `${status.overall} ${Math.round(status.progress || 0)}%${rungs ? ` (${rungs})` : ""}${error}`;
}

/** Poll the transcoding status every second until it is ok or failed; return the last one. */
async function waitForTranscode(uploadId) {
  let failures = 0;
  for (;;) {
    try {
      const status = await api("GET", `/transcode/status/${encodeURIComponent(uploadId)}`);
      failures = 0;
      showTranscodeStatus(status);
      if (FINISHED.has(status.overall)) return status;
    } catch (err) {
      failures += 1;
      if (failures >= MAX_POLL_FAILURES) throw err;
      $("transcode-text").textContent = `waiting: ${err.message}`;
    }
    await sleep(POLL_MS);
  }
}

/** The whole upload: init, chunks, complete, then transcoding until it ends. */
async function upload(file) {
  const totalChunks = Math.max(1, Math.ceil(file.size / CHUNK_SIZE));
  const init = await api(
    "POST",
    "/upload/init",
    formData({
      filename: file.name,
      total_chunks: String(totalChunks),
      total_size: String(file.size),
      chunk_size: String(CHUNK_SIZE),
    }),
  );
  const uploadId = init.upload_id;
  await sendChunks(uploadId, file, totalChunks);
  $("upload-text").textContent = "assembling…";
  await api("POST", "/upload/complete", formData({ upload_id: uploadId }));
  $("upload-text").textContent = `${formatBytes(file.size)} sent`;
  const status = await waitForTranscode(uploadId);
  if (status.overall === "failed") {
    throw new Error(`transcoding failed: ${status.error || "no reason given"}`);
  }
  return uploadId;
}

async function onUploadSubmit(event) {
  event.preventDefault();
  const file = $("file-input").files[0];
  if (!file) {
    showError("Choose a video file first.");
    return;
  }
  clearError();
  $("upload-button").disabled = true;
  $("upload-status").hidden = false;
  $("upload-progress").value = 0;
  $("transcode-progress").value = 0;
  $("transcode-text").textContent = "";
  try {
    const uploadId = await upload(file);
    await loadLibrary();
    location.hash = `#/watch/${uploadId}`;
  } catch (err) {
    showError(`Upload failed: ${err.message}`);
    loadLibrary();
  } finally {
    $("upload-button").disabled = false;
  }
}

// ---------------------------------------------------------------- library

function videoItem(video) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "video-item";
  const title = document.createElement("span");
  title.className = "video-title";
  title.textContent = video.filename || video.id;
  const meta = document.createElement("span");
  meta.className = "video-meta";
  meta.textContent = [video.status, formatDuration(video.duration)].filter(Boolean).join(" · ");
  button.append(title, meta);
  button.setAttribute("aria-label", `Play ${title.textContent} (${meta.textContent})`);
  button.addEventListener("click", () => {
    const target = `#/watch/${video.id}`;
    // Setting the same hash fires no hashchange, so replay by hand.
    if (location.hash === target) route();
    else location.hash = target;
  });
  item.append(button);
  return item;
}

async function loadLibrary() {
  try {
    const data = await api("GET", "/videos");
    const videos = Array.isArray(data) ? data : (data && data.videos) || [];
    $("video-list").replaceChildren(...videos.map(videoItem));
    $("library-empty").hidden = videos.length > 0;
  } catch (err) {
    showError(`Could not load the library: ${err.message}`);
  }
}

// ---------------------------------------------------------------- player

let hls = null;
let recoveredMedia = false; // hls.js advises one recoverMediaError, not a loop of them

function levelName(level) {
  if (level.height) return `${level.height}p`;
  return level.bitrate ? `${Math.round(level.bitrate / 1000)} kbps` : "unknown";
}

function fillLevels(levels) {
  const options = [new Option("Auto", "-1")];
  levels.forEach((level, index) => {
    const kbps = level.bitrate ? ` (${Math.round(level.bitrate / 1000)} kbps)` : "";
    options.push(new Option(`${levelName(level)}${kbps}`, String(index)));
  });
  $("quality").replaceChildren(...options);
  $("quality").value = "-1";
  $("quality").disabled = levels.length < 2;
}

function showCurrentLevel() {
  if (!hls || hls.currentLevel < 0 || !hls.levels[hls.currentLevel]) return;
  const mode = hls.autoLevelEnabled ? "auto" : "fixed";
  $("current-level").textContent = `Playing ${levelName(hls.levels[hls.currentLevel])} (${mode})`;
}

function onHlsError(_event, data) {
  if (!data.fatal) return; // hls.js recovers from non-fatal errors itself
  if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recoveredMedia) {
    recoveredMedia = true;
    hls.recoverMediaError();
    return;
  }
  const status = data.response && data.response.code ? ` (HTTP ${data.response.code})` : "";
  showError(`Playback failed: ${responseDetail(data.networkDetails) || data.details}${status}`);
}

/** The API's `detail` from a failed hls.js load (its XHR), or "" when there is none. */
function responseDetail(xhr) {
  // Segments load as arraybuffer, whose responseText throws; only text bodies carry JSON.
  if (!(xhr instanceof XMLHttpRequest) || !["", "text"].includes(xhr.responseType)) return "";
  try {
    const body = JSON.parse(xhr.responseText);
    return body && body.detail ? String(body.detail) : "";
  } catch {
    return "";
  }
}

function resetPlayer() {
  if (hls) hls.destroy();
  hls = null;
  recoveredMedia = false;
  const video = $("video");
  video.removeAttribute("src");
  video.load();
  fillLevels([]);
  $("current-level").textContent = "";
}

function playWithHlsJs(video, source) {
  hls = new Hls();
  hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => fillLevels(data.levels));
  hls.on(Hls.Events.LEVEL_SWITCHED, showCurrentLevel);
  hls.on(Hls.Events.ERROR, onHlsError);
  hls.loadSource(source);
  hls.attachMedia(video);
}

/** Play video `id`: hls.js where Media Source works, else the browser's own HLS (iOS). */
function play(id) {
  resetPlayer();
  $("player-section").hidden = false;
  const video = $("video");
  const source = `/stream/${encodeURIComponent(id)}/master.m3u8`;
  // hls.js first even where HLS is native (desktop Safari): only it exposes the levels.
  if (window.Hls && Hls.isSupported()) {
    playWithHlsJs(video, source);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = source;
    $("current-level").textContent = "Quality chosen by the browser";
  } else {
    showError("This browser cannot play HLS: hls.js did not load (run `make install`).");
    return;
  }
  $("player-section").scrollIntoView({ behavior: "smooth", block: "start" });
}

function onQualityChange() {
  if (!hls) return;
  // -1 hands the choice back to hls.js's bandwidth estimate.
  hls.currentLevel = Number($("quality").value);
  showCurrentLevel();
}

// ---------------------------------------------------------------- routing

function route() {
  const match = location.hash.match(/^#\/watch\/([^/?#]+)$/);
  if (match) {
    clearError();
    play(decodeURIComponent(match[1]));
  } else {
    resetPlayer();
    $("player-section").hidden = true;
  }
}

function main() {
  $("upload-form").addEventListener("submit", onUploadSubmit);
  $("refresh").addEventListener("click", loadLibrary);
  $("quality").addEventListener("change", onQualityChange);
  window.addEventListener("hashchange", route);
  loadLibrary();
  route();
}

main();
