// Resumable uploads (no DOM here): the chunk size from a timed speed test, the sha256 from a
// Web Worker, up to PARALLEL chunks in flight with retries, and what the server already has
// asked for before anything is sent, so a reload or a lost connection never resends a chunk.
// Where uploading is closed (the server's UPLOAD_TOKEN), the page holds no upload token: an
// operator signed in with the admin token gets a one-time direct upload URL for the file, and
// every request of that upload carries its token instead (see directUpload).

import { ApiError, api, formData, postWithProgress } from "./api.js";
import { sleep } from "./format.js";

const KiB = 1024;
const MiB = 1024 * KiB;
export const MIN_CHUNK = 4 * MiB; // below this the per-request overhead shows
export const MAX_CHUNK = 64 * MiB; // above this a lost chunk costs too much to send again
// With PARALLEL chunks sharing the link, one chunk then lasts about PARALLEL x this long.
const CHUNK_SECONDS = 2;
// Chunks in flight for the whole page (all files together): enough to fill a link and hide
// each request's round trip, few enough that each chunk still finishes soon.
export const PARALLEL = 4;
const MAX_ATTEMPTS = 6; // per chunk, before the upload waits for the connection
const BACKOFF_MS = 500; // doubled per attempt (0.5, 1, 2, 4, 8 s), with jitter
const BACKOFF_CAP_MS = 15_000;
const RECONNECT_MS = 10_000; // after the retries, try again this often (or when back online)
const PROBE_START = 256 * KiB;
const PROBE_MAX = 16 * MiB; // the speed test's own limit
const PROBE_SECONDS = 0.5; // a shorter probe measures latency, not throughput
const SPEED_WINDOW_MS = 5000;
const KEY_PREFIX = "upload:";
// A direct upload URL lasts this long: a big file on a slow link, paused overnight, still fits.
const DIRECT_SECONDS = 24 * 3600;

// ---------------------------------------------------------------- chunk size

/** The chunk size for a link of `bytesPerSecond`: whole MiB within MIN_CHUNK..MAX_CHUNK. */
export function chunkSizeFor(bytesPerSecond) {
  const wanted = Math.round((bytesPerSecond * CHUNK_SECONDS) / MiB) * MiB;
  return Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, wanted));
}

/** Bytes per second from GET /api/speedtest, the probe growing until it lasts long enough. */
async function measureLink() {
  // It times the download: browsers cannot time an upload without sending one. Uplinks are
  // often slower, which the 4 MiB floor and the short CHUNK_SECONDS allow for.
  for (let size = PROBE_START; ; size *= 4) {
    const started = performance.now();
    const response = await fetch(`/api/speedtest?size=${size}`, { cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, "speedtest", "speed test failed");
    await response.arrayBuffer();
    const seconds = (performance.now() - started) / 1000;
    if (seconds >= PROBE_SECONDS || size >= PROBE_MAX) return size / Math.max(seconds, 0.001);
  }
}

let measured = null;

/** The chunk size for this page's link, measured once and shared by every upload. */
export function chooseChunkSize() {
  if (!measured) {
    measured = measureLink()
      .then(chunkSizeFor)
      .catch(() => {
        measured = null; // measure again next time; this upload takes the safe floor
        return MIN_CHUNK;
      });
  }
  return measured;
}

// ---------------------------------------------------------------- sha256 in a worker

/** The file's sha256 (hex), hashed incrementally in a worker; `onProgress(bytesHashed)`. */
export function hashFile(file, { onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const worker = new Worker("/static/hash-worker.js");
    const finish = () => worker.terminate();
    signal.addEventListener("abort", () => {
      finish();
      reject(signal.reason);
    });
    worker.onmessage = ({ data }) => {
      if (data.type === "progress") onProgress(data.done);
      else if (data.type === "done") resolve(data.sha256);
      else reject(new Error(`could not hash the file: ${data.message}`));
      if (data.type !== "progress") finish();
    };
    worker.onerror = (event) => {
      finish();
      reject(new Error(`could not hash the file: ${event.message || "worker failed"}`));
    };
    worker.postMessage({ file });
  });
}

// ---------------------------------------------------------------- chunks in flight

/** At most PARALLEL chunks in flight across every upload of the page, first come first served. */
class Slots {
  #free;
  #waiting = [];

  constructor(count) {
    this.#free = count;
  }

  /** Wait for a free slot; rejects with the signal's reason if it is aborted first. */
  take(signal) {
    if (this.#free > 0) {
      this.#free -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#waiting.push(waiter);
      signal.addEventListener("abort", () => {
        const index = this.#waiting.indexOf(waiter);
        if (index < 0) return;
        this.#waiting.splice(index, 1);
        reject(signal.reason);
      });
    });
  }

  give() {
    const next = this.#waiting.shift();
    if (next) next.resolve();
    else this.#free += 1;
  }
}

const slots = new Slots(PARALLEL);

// ---------------------------------------------------------------- what survives a reload

/** Uploads survive a reload keyed by what identifies a picked file without reading it. */
export function fileKey(file) {
  return `${KEY_PREFIX}${file.name}:${file.size}:${file.lastModified}`;
}

function loadRecord(file) {
  try {
    return JSON.parse(localStorage.getItem(fileKey(file)) || "null");
  } catch {
    return null;
  }
}

function saveRecord(file, record) {
  localStorage.setItem(fileKey(file), JSON.stringify(record));
}

function forgetRecord(file) {
  localStorage.removeItem(fileKey(file));
}

/** Every upload this browser started and did not finish: [{key, filename, size, ...}]. */
export function unfinishedUploads() {
  const found = [];
  for (let i = 0; i < localStorage.length; i += 1) {
    const key = localStorage.key(i);
    if (!key || !key.startsWith(KEY_PREFIX)) continue;
    try {
      found.push({ key, ...JSON.parse(localStorage.getItem(key)) });
    } catch {
      localStorage.removeItem(key);
    }
  }
  return found.sort((a, b) => (a.savedAt || 0) - (b.savedAt || 0));
}

export function forgetUnfinished(key) {
  if (key.startsWith(KEY_PREFIX)) localStorage.removeItem(key);
}

// ---------------------------------------------------------------- one upload

// ---------------------------------------------------------------- closed uploading

/**
 * A one-time direct upload URL for `file` (POST /upload/direct with the admin token this
 * browser keeps): its token opens this one upload, from this page's origin only. Without the
 * admin token it fails saying what is needed (and the page asks for the token).
 */
export async function directUpload(file, codec, signal) {
  const settings = {
    max_size: file.size,
    expires_in: DIRECT_SECONDS,
    cors_origin: window.location.origin,
    ...(codec ? { codec } : {}),
  };
  try {
    const made = await api("POST", "/upload/direct", JSON.stringify(settings), { signal });
    return made.token;
  } catch (err) {
    if (err.status !== 401) throw err;
    throw new ApiError(
      401,
      "upload_closed",
      "Uploading on this server needs a token (UPLOAD_TOKEN is set). Sign in with the " +
        "operator's admin token (Console, or the prompt) and press Retry: the page then " +
        "uploads through a one-time direct upload URL.",
    );
  }
}

/** `path` carrying a direct upload token, when the upload has one. */
export function withDirect(path, token) {
  if (!token) return path;
  return `${path}${path.includes("?") ? "&" : "?"}direct_token=${encodeURIComponent(token)}`;
}

// Errors after which this upload can never complete: start again from scratch next time.
const HOPELESS = new Set([
  "checksum_mismatch",
  "not_a_video",
  "not_found",
  "too_large",
  "direct_upload_gone",
]);

/**
 * One file's upload. `state` is one of: hashing, starting, uploading, paused, waiting (for the
 * connection), completing, done, failed. Listeners registered with onChange hear every change.
 */
export class ResumableUpload {
  #controller = null;
  #listeners = new Set();
  #inflight = new Map(); // chunk index -> bytes of it sent so far
  #samples = []; // [time ms, bytes sent this session] for the speed
  #transferred = 0;
  #reconnect = null;

  /** `codec`: the ladder codec to ask for ("h264" | "hevc"); "" leaves it to the server. */
  constructor(file, { codec = "" } = {}) {
    this.file = file;
    this.codec = codec;
    this.key = fileKey(file);
    this.state = "new";
    this.message = "";
    this.uploadId = null;
    this.direct = null; // the direct upload token, where uploading is closed
    this.chunkSize = null;
    this.sha256 = null;
    this.prepared = null; // {sha256, chunkSize} once hashed and measured
    this.received = new Set();
    this.hashed = 0;
    this.video = null;
  }

  onChange(listener) {
    this.#listeners.add(listener);
  }

  #changed() {
    for (const listener of this.#listeners) listener(this);
  }

  #set(state, message = "") {
    this.state = state;
    this.message = message;
    this.#changed();
  }

  get totalChunks() {
    return this.chunkSize ? Math.max(1, Math.ceil(this.file.size / this.chunkSize)) : 0;
  }

  get active() {
    return ["hashing", "starting", "uploading", "completing"].includes(this.state);
  }

  #chunkBytes(index) {
    const start = index * this.chunkSize;
    return Math.max(0, Math.min(this.chunkSize, this.file.size - start));
  }

  /** Bytes on the server plus bytes of the chunks in flight. */
  get sentBytes() {
    if (this.state === "done") return this.file.size;
    let sum = 0;
    for (const index of this.received) sum += this.#chunkBytes(index);
    for (const bytes of this.#inflight.values()) sum += bytes;
    return Math.min(sum, this.file.size);
  }

  /** Bytes per second over the last few seconds, or null before there is enough to tell. */
  get speed() {
    const now = performance.now();
    this.#samples = this.#samples.filter(([time]) => now - time <= SPEED_WINDOW_MS);
    if (this.state !== "uploading" || this.#samples.length < 2) return null;
    const [firstTime, firstBytes] = this.#samples[0];
    const seconds = (now - firstTime) / 1000;
    return seconds < 0.5 ? null : (this.#transferred - firstBytes) / seconds;
  }

  /** Seconds left at the current speed, or null. */
  get secondsLeft() {
    const speed = this.speed;
    return speed ? (this.file.size - this.sentBytes) / speed : null;
  }

  start() {
    if (this.active || this.state === "done") return;
    clearTimeout(this.#reconnect);
    this.#controller = new AbortController();
    this.#run(this.#controller.signal);
  }

  pause() {
    if (!this.active || this.state === "completing") return;
    this.#controller.abort(new ApiError(-1, "paused", "paused"));
    this.#inflight.clear();
    this.#set("paused", "Paused. Resume continues from the chunks the server already has.");
  }

  /** Continue a paused, waiting or failed upload from what the server has. */
  resume() {
    this.start();
  }

  async #run(signal) {
    try {
      if (!this.uploadId) await this.#prepare(signal);
      if (this.state === "done" || signal.aborted) return;
      await this.#sync(signal);
      await this.#sendMissing(signal);
      await this.#complete(signal);
    } catch (err) {
      if (!signal.aborted) this.#failed(err);
    }
  }

  /** Take over this file's earlier upload if the server still has it; else hash and init. */
  async #prepare(signal) {
    const saved = loadRecord(this.file);
    if (saved && (await this.#adopt(saved, signal))) return;
    // A retry after a refused start (e.g. the token was missing) keeps the checksum.
    if (!this.prepared) {
      this.#set("hashing", "Computing the file's checksum…");
      const [sha256, chunkSize] = await Promise.all([
        hashFile(this.file, { signal, onProgress: (done) => this.#hashProgress(done) }),
        chooseChunkSize(),
      ]);
      this.prepared = { sha256, chunkSize };
    }
    const { sha256, chunkSize } = this.prepared;
    this.#set("starting", "Starting the upload…");
    const init = await this.#init(chunkSize, sha256, signal);
    Object.assign(this, { uploadId: init.upload_id, chunkSize, sha256 });
    const { name, size } = this.file;
    saveRecord(this.file, {
      uploadId: this.uploadId,
      direct: this.direct,
      chunkSize,
      sha256,
      filename: name,
      size,
      savedAt: Date.now(),
    });
  }

  /** POST /upload/init; where uploading is closed (401), through a direct upload URL. */
  async #init(chunkSize, sha256, signal) {
    const declaration = () =>
      formData({
        filename: this.file.name,
        total_chunks: Math.max(1, Math.ceil(this.file.size / chunkSize)),
        total_size: this.file.size,
        chunk_size: chunkSize,
        sha256,
        ...(this.codec ? { codec: this.codec } : {}),
      });
    try {
      return await api("POST", withDirect("/upload/init", this.direct), declaration(), { signal });
    } catch (err) {
      if (err.status !== 401 || this.direct) throw err;
    }
    this.direct = await directUpload(this.file, this.codec, signal);
    return api("POST", withDirect("/upload/init", this.direct), declaration(), { signal });
  }

  #hashProgress(done) {
    this.hashed = done;
    const percent = Math.floor((done / Math.max(1, this.file.size)) * 100);
    this.message = `Computing the file's checksum… ${percent}%`;
    this.#changed();
  }

  /** Continue the saved upload `saved`; false when the server no longer knows it. */
  async #adopt(saved, signal) {
    let state;
    try {
      const path = withDirect(`/upload/${encodeURIComponent(saved.uploadId)}`, saved.direct);
      state = await api("GET", path, undefined, { signal });
    } catch (err) {
      // 410: its direct upload URL has expired or is spent; start afresh.
      if (err.status !== 404 && err.status !== 410) throw err;
      forgetRecord(this.file);
      return false;
    }
    Object.assign(this, { uploadId: saved.uploadId, chunkSize: saved.chunkSize });
    this.direct = saved.direct || null;
    this.sha256 = saved.sha256;
    this.prepared = { sha256: saved.sha256, chunkSize: saved.chunkSize };
    this.received = new Set(state.received);
    if (state.completed) {
      forgetRecord(this.file);
      this.#set("done", "This file was already uploaded.");
    }
    return true;
  }

  /** Learn which chunks the server has (after a pause, a reload or a lost connection). */
  async #sync(signal) {
    const path = withDirect(`/upload/${encodeURIComponent(this.uploadId)}`, this.direct);
    const state = await api("GET", path, undefined, { signal });
    this.received = new Set(state.received);
    const have = this.received.size;
    const note = have ? ` The server already has ${have} of ${this.totalChunks} chunks.` : "";
    this.#set("uploading", `Uploading in ${formatChunk(this.chunkSize)} chunks.${note}`);
  }

  /** Send every chunk the server lacks, PARALLEL at a time; the first hard error ends it. */
  async #sendMissing(signal) {
    const queue = [];
    for (let index = 0; index < this.totalChunks; index += 1) {
      if (!this.received.has(index)) queue.push(index);
    }
    // One chunk giving up stops the others (what arrived is kept); a pause stops them all.
    const batch = new AbortController();
    signal.addEventListener("abort", () => batch.abort(signal.reason));
    const worker = async () => {
      while (queue.length && !batch.signal.aborted) {
        await this.#sendChunk(queue.shift(), batch.signal);
      }
    };
    const workers = Array.from({ length: Math.min(PARALLEL, queue.length) }, worker);
    try {
      await Promise.all(workers);
    } catch (err) {
      batch.abort(err);
      throw err;
    }
  }

  async #sendChunk(index, signal) {
    const blob = this.file.slice(index * this.chunkSize, (index + 1) * this.chunkSize);
    for (let attempt = 1; ; attempt += 1) {
      try {
        await slots.take(signal);
        try {
          const query = new URLSearchParams({ upload_id: this.uploadId, index: String(index) });
          await postWithProgress(withDirect(`/upload/chunk?${query}`, this.direct), blob, {
            contentType: "application/octet-stream",
            signal,
            onProgress: (bytes) => this.#chunkProgress(index, bytes),
          });
        } finally {
          slots.give();
        }
        this.#inflight.delete(index);
        this.received.add(index);
        this.#changed();
        return;
      } catch (err) {
        this.#inflight.delete(index);
        if (signal.aborted || !err.retryable || attempt >= MAX_ATTEMPTS) throw err;
        const delay = backoff(attempt);
        this.message = `Chunk ${index + 1} failed (${err.message}); retrying in ${Math.ceil(delay / 1000)} s.`;
        this.#changed();
        await sleep(delay, signal);
      }
    }
  }

  #chunkProgress(index, bytes) {
    this.#transferred += Math.max(0, bytes - (this.#inflight.get(index) || 0));
    this.#inflight.set(index, bytes);
    this.#samples.push([performance.now(), this.#transferred]);
    this.#changed();
  }

  /** POST /upload/complete; chunks the server reports missing are sent again, twice at most. */
  async #complete(signal) {
    for (let round = 0; ; round += 1) {
      this.#set("completing", "Checking the file on the server…");
      try {
        const path = withDirect("/upload/complete", this.direct);
        const done = await api("POST", path, formData({ upload_id: this.uploadId }));
        forgetRecord(this.file);
        this.video = done.video;
        this.#set("done", "Uploaded. Transcoding follows: see its progress in the library.");
        return;
      } catch (err) {
        if (err.code !== "missing_chunks" || round >= 2) throw err;
      }
      await this.#sync(signal);
      await this.#sendMissing(signal);
    }
  }

  #failed(err) {
    this.#inflight.clear();
    if (err instanceof ApiError && err.retryable) {
      this.#waitForConnection(err);
      return;
    }
    if (err instanceof ApiError && HOPELESS.has(err.code)) {
      forgetRecord(this.file); // nothing to resume: picking the file again starts afresh
      this.uploadId = null;
      this.direct = null;
      this.prepared = null; // the file may have changed: hash it again
      this.received.clear();
    }
    this.#set("failed", err.message);
  }

  /** Lost connection or server trouble: continue when back online, or every RECONNECT_MS. */
  #waitForConnection(err) {
    const again = () => {
      window.removeEventListener("online", again);
      clearTimeout(this.#reconnect);
      if (this.state === "waiting") this.start();
    };
    window.addEventListener("online", again);
    this.#reconnect = setTimeout(again, RECONNECT_MS);
    this.#set(
      "waiting",
      `${err.message} Trying again in ${RECONNECT_MS / 1000} s, from what the server has.`,
    );
  }
}

function backoff(attempt) {
  const jitter = 0.75 + Math.random() / 2; // parallel retries should not all land at once
  return Math.min(BACKOFF_CAP_MS, BACKOFF_MS * 2 ** (attempt - 1)) * jitter;
}

function formatChunk(bytes) {
  return `${Math.round(bytes / MiB)} MiB`;
}
