// Seek previews: the storyboard's WebVTT map (time range -> tile of a sprite, as
// `storyboard.jpg#xywh=x,y,w,h`) read into cues, and a seek bar that shows the tile under the
// pointer. hls.js draws no controls, and the browser's own seek bar tells nothing of where the
// pointer is, so the bar is the page's own; the native controls stay for play, volume and
// full screen.

import { $, formatDuration } from "./format.js";

const TIMESTAMP = /^(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})$/;
const XYWH = /#xywh=(\d+),(\d+),(\d+),(\d+)$/;
const KEY_STEP_SECONDS = 5;

function seconds(text) {
  const match = TIMESTAMP.exec(text.trim());
  if (!match) return NaN;
  const [, h, m, s, ms] = match;
  return Number(h || 0) * 3600 + Number(m) * 60 + Number(s) + Number(ms) / 1000;
}

/**
 * The cues of a storyboard map: [{start, end, url, x, y, w, h}], in time order. Tile URIs are
 * resolved against `base` (the map's own URL); the server has put the playback token in them.
 */
export function parseStoryboard(text, base) {
  const cues = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length - 1; i += 1) {
    if (!lines[i].includes("-->")) continue;
    const [from, to] = lines[i].split("-->");
    const target = lines[i + 1].trim();
    const box = XYWH.exec(target);
    const start = seconds(from);
    const end = seconds(to.trim().split(/\s+/)[0]);
    if (!box || Number.isNaN(start) || Number.isNaN(end)) continue;
    const url = new URL(target.slice(0, box.index), base).href;
    const [x, y, w, h] = box.slice(1).map(Number);
    cues.push({ start, end, url, x, y, w, h });
  }
  return cues.sort((a, b) => a.start - b.start);
}

/** The cue showing `time` (the last one starting at or before it), or null. */
export function cueAt(cues, time) {
  let low = 0;
  let high = cues.length - 1;
  let found = null;
  while (low <= high) {
    const mid = (low + high) >> 1;
    if (cues[mid].start <= time) {
      found = cues[mid];
      low = mid + 1;
    } else {
      high = mid - 1;
    }
  }
  return found;
}

/** The storyboard of a video, or [] when it has none (yet): previews are a nicety. */
export async function loadStoryboard(url, signal) {
  try {
    const response = await fetch(url, { signal });
    if (!response.ok) return [];
    return parseStoryboard(await response.text(), new URL(url, location.href).href);
  } catch {
    return [];
  }
}

/**
 * The page's seek bar under `video`: shows what is played, seeks on click and with the arrow
 * keys, and previews the storyboard tile under the pointer. Returns {setCues, reset}.
 */
export function createSeekBar(video) {
  const bar = $("seekbar");
  const fill = $("seekbar-fill");
  const preview = $("seek-preview");
  const image = $("seek-preview-image");
  const label = $("seek-preview-time");
  let cues = [];

  // A growing (EVENT) presentation has no final duration yet: what can be seeked is its end.
  const end = () => {
    if (Number.isFinite(video.duration) && video.duration > 0) return video.duration;
    const ranges = video.seekable;
    return ranges.length ? ranges.end(ranges.length - 1) : 0;
  };
  const timeAt = (clientX) => {
    const box = bar.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
    return { time: fraction * end(), offset: fraction * box.width, width: box.width };
  };

  function showProgress() {
    const total = end();
    bar.hidden = !(total > 0);
    const fraction = total > 0 ? Math.min(1, video.currentTime / total) : 0;
    fill.style.width = `${(fraction * 100).toFixed(2)}%`;
    bar.setAttribute("aria-valuemax", String(Math.round(total)));
    bar.setAttribute("aria-valuenow", String(Math.round(video.currentTime)));
    bar.setAttribute("aria-valuetext", `${formatDuration(video.currentTime)} of ${formatDuration(total)}`);
  }

  function showPreview(event) {
    const { time, offset, width } = timeAt(event.clientX);
    const cue = cueAt(cues, time);
    image.hidden = !cue;
    if (cue) {
      image.style.width = `${cue.w}px`;
      image.style.height = `${cue.h}px`;
      image.style.backgroundImage = `url("${cue.url}")`;
      image.style.backgroundPosition = `${-cue.x}px ${-cue.y}px`;
    }
    label.textContent = formatDuration(time);
    preview.hidden = false;
    // Centred over the pointer, but never past either end of the bar.
    const half = preview.offsetWidth / 2;
    preview.style.left = `${Math.min(width - half, Math.max(half, offset)) - half}px`;
    preview.dataset.time = String(time);
  }

  function seekTo(time) {
    video.currentTime = Math.min(Math.max(0, time), end());
    showProgress();
  }

  for (const name of ["timeupdate", "durationchange", "loadedmetadata", "progress", "emptied"]) {
    video.addEventListener(name, showProgress);
  }
  bar.addEventListener("pointermove", showPreview);
  bar.addEventListener("pointerleave", () => {
    preview.hidden = true;
  });
  bar.addEventListener("click", (event) => seekTo(timeAt(event.clientX).time));
  bar.addEventListener("keydown", (event) => {
    const moves = {
      ArrowLeft: -KEY_STEP_SECONDS,
      ArrowRight: KEY_STEP_SECONDS,
      ArrowDown: -KEY_STEP_SECONDS,
      ArrowUp: KEY_STEP_SECONDS,
    };
    if (event.key in moves) seekTo(video.currentTime + moves[event.key]);
    else if (event.key === "Home") seekTo(0);
    else if (event.key === "End") seekTo(end());
    else return;
    event.preventDefault();
  });

  return {
    setCues(found) {
      cues = found;
    },
    reset() {
      cues = [];
      preview.hidden = true;
      bar.hidden = true;
      fill.style.width = "0%";
    },
  };
}
