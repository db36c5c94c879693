// The library: every video as a card (poster or placeholder, name, duration, status) whose
// transcoding progress updates live while the view is open. An audio-only video's card shows
// a note where a poster would be.

import { api } from "./api.js";
import { $, el, formatBytes, formatDuration, statusLabel } from "./format.js";

const LIST_PATH = "/videos?limit=200";
const POLL_MS = 1000; // transcoding progress of unfinished videos
const LIST_MS = 5000; // the list itself: new uploads from other tabs, deletions
const FINISHED = new Set(["ok", "failed"]);

const cards = new Map(); // video id -> {video, parts}
let timers = [];
let onError = () => {};

export function setUpLibrary({ showError }) {
  onError = showError;
  $("refresh").addEventListener("click", () => loadLibrary());
}

/** Start showing the library: load it now, then keep it current until stopLibrary(). */
export function startLibrary() {
  stopLibrary();
  loadLibrary().then(pollProgress); // progress at once, not a second later
  timers = [setInterval(pollProgress, POLL_MS), setInterval(loadLibrary, LIST_MS)];
}

export function stopLibrary() {
  for (const timer of timers) clearInterval(timer);
  timers = [];
}

let loading = null;

export function loadLibrary() {
  loading ??= fetchList().finally(() => {
    loading = null;
  });
  return loading;
}

async function fetchList() {
  let videos;
  try {
    videos = await api("GET", LIST_PATH);
  } catch (err) {
    onError(`Could not load the library: ${err.message}`);
    return;
  }
  const seen = new Set();
  const items = videos.map((video) => {
    seen.add(video.id);
    return upsert(video).item;
  });
  for (const id of [...cards.keys()]) if (!seen.has(id)) cards.delete(id);
  // Reattaching in order is a no-op for items already in place (focus stays where it is).
  const list = $("video-list");
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  while (list.children.length > items.length) list.lastElementChild.remove();
  $("library-empty").hidden = videos.length > 0;
}

function upsert(video) {
  let card = cards.get(video.id);
  if (!card) {
    card = { video, parts: cardParts(video) };
    cards.set(video.id, card);
  }
  const learned = video.audio_only && !card.video.audio_only;
  card.video = { ...card.video, ...video };
  if (learned) tryPoster(card.parts.thumb, card.video); // known once its upload completed
  renderCard(card);
  return card.parts;
}

function cardParts(video) {
  const href = `#/watch/${video.id}`;
  const parts = {
    thumb: el("a", { className: "thumb", href, tabindex: "-1", "aria-hidden": "true" }),
    title: el("a", { href }),
    meta: el("p", { className: "video-meta" }),
    status: el("span", { className: "badge", role: "status" }),
    percent: el("span", { className: "percent" }),
    bar: el("progress", { max: 100, value: 0 }),
    error: el("p", { className: "video-error" }),
  };
  tryPoster(parts.thumb, video);
  parts.item = el(
    "li",
    { className: "video-card", dataset: { id: video.id } },
    parts.thumb,
    el(
      "div",
      { className: "card-body" },
      el("h3", { className: "video-title" }, parts.title),
      parts.meta,
      el("p", { className: "video-status" }, parts.status, parts.percent),
      parts.bar,
      parts.error,
    ),
  );
  return parts;
}

/** The poster, when the streaming service has one; a neutral placeholder otherwise (a note,
 * for an audio-only video: it has no picture to show, so none is asked for). */
function tryPoster(thumb, video) {
  thumb.classList.toggle("audio", Boolean(video.audio_only));
  if (video.audio_only) {
    thumb.replaceChildren();
    return;
  }
  const img = el("img", {
    src: `/stream/${encodeURIComponent(video.id)}/poster.jpg`,
    alt: "",
    loading: "lazy",
    decoding: "async",
  });
  img.addEventListener("error", () => img.remove());
  img.addEventListener("load", () => thumb.classList.add("has-poster"));
  thumb.replaceChildren(img);
}

function renderCard({ video, parts, job }) {
  const name = video.filename || video.id;
  parts.title.textContent = name;
  const size = video.width && video.height ? `${video.width}×${video.height}` : "";
  const facts = [formatDuration(video.duration), size, formatBytes(video.size)].filter(Boolean);
  // Each fact stays whole on one line; the line breaks between them on a narrow card.
  parts.meta.replaceChildren(
    ...facts.flatMap((fact, i) => (i ? [" · ", el("span", { text: fact })] : [el("span", { text: fact })])),
  );
  // The record says when a video is finished; while it is not, its job says more.
  const live = job && !FINISHED.has(video.status);
  const status = live ? job.overall : video.status;
  parts.item.dataset.status = status;
  parts.status.textContent = statusLabel(status);
  parts.status.className = `badge status-${status}`;
  const progress = live ? Math.floor(job.progress) : null;
  const running = !FINISHED.has(status);
  parts.bar.hidden = !running;
  parts.bar.value = progress ?? 0;
  parts.bar.setAttribute("aria-label", `Transcoding of ${name}`);
  parts.percent.textContent = running && progress !== null ? ` ${progress}%` : "";
  if (running && live && job.playable) parts.percent.textContent += " · playable now";
  const error = (live && job.error) || video.error;
  parts.error.textContent = status === "failed" && error ? error : "";
  parts.error.hidden = !parts.error.textContent;
}

/** One status request per unfinished video; a video that finishes reloads the list. */
async function pollProgress() {
  const unfinished = [...cards.values()].filter((card) => !FINISHED.has(card.video.status));
  const finished = await Promise.all(unfinished.map(pollOne));
  if (finished.some(Boolean)) loadLibrary(); // duration, qualities and status are final now
}

async function pollOne(card) {
  if (card.video.status === "uploading") return false;
  try {
    card.job = await api("GET", `/transcode/status/${encodeURIComponent(card.video.id)}`);
  } catch {
    return false; // the job may not exist yet, or the video was just deleted
  }
  renderCard(card);
  if (FINISHED.has(card.job.overall)) {
    if (card.job.overall === "ok") tryPoster(card.parts.thumb, card.video);
    return true;
  }
  return false;
}
