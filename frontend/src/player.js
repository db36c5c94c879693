// The watch view: hls.js on the master playlist with a quality menu, a captions menu
// (captions.js), the rung playing now, the poster before playback, storyboard previews over
// the seek bar, downloads (the original and each rung as MP4) and a shareable link. A video
// plays as soon as its first chunk is published (`playable`), while the rest is still being
// encoded. An audio-only video (sound with no picture) plays in an <audio> element instead:
// no picture area, poster, storyboard or quality menu, and its download is the audio as an
// .m4a.
//
// The embeddable player (/embed/{id}, embed.js) is this same module without the page's chrome
// (share box, downloads, details): `setUpPlayer({chrome: false, playback})`, where `playback`
// holds the embed's options (autoplay, muted, start, loop).

import { api } from "./api.js";
import { createCaptionsMenu } from "./captions.js";
import { $, el, formatBytes, formatDuration, sleep, statusLabel } from "./format.js";
import { createSeekBar, loadStoryboard } from "./storyboard.js";

const POLL_MS = 1000;
const FINISHED = new Set(["ok", "failed"]);

let hls = null;
let session = null; // aborted when another video is shown or the view is left
let recoveredMedia = false; // hls.js advises one recoverMediaError, not a loop of them
let onError = () => {};
let onUnavailable = () => {}; // the video cannot be shown at all (unknown id, API down)
let seekBar = null;
let storyboard = []; // the cues of the video shown, once it has a storyboard
let chrome = true; // the page's share box, downloads and details (false: the embed)
let playback = {}; // {autoplay, muted, start, loop}: how playback starts (the embed's options)
let captionsMenu = null;

/**
 * Wire the player to the page. `chrome: false` leaves out what only the page has (share box,
 * downloads, details); `playback` is {autoplay, muted, start (seconds), loop}, all optional;
 * `unavailable()` is called when the video cannot be shown at all.
 */
export function setUpPlayer({
  showError,
  chrome: withChrome = true,
  playback: options = {},
  unavailable = () => {},
}) {
  onError = showError;
  onUnavailable = unavailable;
  chrome = withChrome;
  playback = options;
  seekBar = createSeekBar($("video"));
  captionsMenu = createCaptionsMenu($("player-controls"));
  $("quality").addEventListener("change", onQualityChange);
  if (chrome) {
    $("copy-link").addEventListener("click", () => copyFrom("share-url", "Link copied."));
    $("copy-embed").addEventListener("click", () => copyFrom("embed-code", "Embed code copied."));
  }
}

/**
 * The playback token of a signed link: in the hash of the page's own links
 * (#/watch/{id}?token=...), or the query of /watch/{id}?token=... and /embed/{id}?token=....
 */
export function playbackToken() {
  const inHash = new URLSearchParams(location.hash.split("?")[1] || "").get("token");
  return inHash || new URLSearchParams(location.search).get("token");
}

/** Show video `id`: its record, then the player once it is playable. */
export async function showVideo(id) {
  stopPlayer();
  session = new AbortController();
  const { signal } = session;
  const path = `/stream/${encodeURIComponent(id)}`;
  // Private playback: a signed link carries its token to the server, which writes it into
  // every URI of the playlists; hls.js needs nothing more.
  const token = playbackToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  if (chrome) showShare(id, path, query);
  $("watch-title").textContent = "Loading…";
  let video;
  try {
    video = await api("GET", `/videos/${encodeURIComponent(id)}`);
  } catch (err) {
    if (signal.aborted) return;
    $("watch-title").textContent = "Video not available";
    onError(err.message);
    onUnavailable();
    return;
  }
  if (signal.aborted) return;
  showRecord(video);
  if (chrome) showDetails(video, id, query);
  showAudioOnly(video.audio_only);
  if (!video.audio_only) showPoster(`${path}/poster.jpg${query}`, signal);
  const assets = { path, query, signal };
  if (video.status === "ok") showFinished(video, assets);
  if (!(await waitUntilPlayable(id, video, signal, assets))) return;
  // The poster is made once the first part plays: ask again if it was not there before.
  if (!video.audio_only && !$("video").getAttribute("poster")) {
    showPoster(`${path}/poster.jpg${query}`, signal);
  }
  startPlayback(`${path}/master.m3u8${query}`, mediaElement(video.audio_only), startAt(video));
}

/** The share box (its watch link and embed code) and the original's download. */
function showShare(id, path, query) {
  $("share-url").value = `${location.origin}/watch/${encodeURIComponent(id)}${query}`;
  $("embed-code").value = embedCode(id, query, "", 16 / 9);
  $("copy-status").textContent = "";
  $("download-original").href = `${path}/original${query}`;
  $("download-rungs").replaceChildren();
  $("watch-meta").textContent = "";
}

/** The <iframe> that embeds this video on another site (640 px wide, the video's shape). */
function embedCode(id, query, title, aspect) {
  const frame = el("iframe", {
    src: `${location.origin}/embed/${encodeURIComponent(id)}${query}`,
    width: "640",
    height: String(Math.round(640 / aspect)),
    title: title || "Video",
    frameborder: "0",
    allow: "autoplay; fullscreen; picture-in-picture",
    allowfullscreen: "",
  });
  return frame.outerHTML;
}

/** Where playback starts: the `start` option, unless it is past the end (then 0, and said). */
function startAt(video) {
  const start = playback.start || 0;
  if (start > 0 && video.duration && start >= video.duration) {
    onError(
      `start=${start} is past the end of this video (${formatDuration(video.duration)} long): ` +
        "it plays from the beginning.",
    );
    return 0;
  }
  return start;
}

/** The element that plays: the <audio> player for sound with no picture, else the <video>. */
function mediaElement(audioOnly) {
  return audioOnly ? $("audio") : $("video");
}

/** Swap the picture area (and what only a picture needs) for the audio player, or back. */
function showAudioOnly(audioOnly) {
  $("video").hidden = audioOnly;
  $("audio-player").hidden = !audioOnly;
  // One rendition, no picture: nothing to choose between, no tiles to preview.
  $("player-controls").hidden = audioOnly;
  if (audioOnly) seekBar.reset();
}

/** The poster, once it has loaded (a missing one would leave a broken picture). */
function showPoster(url, signal) {
  const probe = new Image();
  probe.addEventListener("load", () => {
    if (!signal.aborted) $("video").poster = url;
  });
  probe.src = url;
}

/** What a finished video has: storyboard previews and a download of each rung (an audio-only
 * video: its audio as an .m4a, and no storyboard). */
async function showFinished(video, assets) {
  if (chrome) showDownloads(video, assets);
  if (video.audio_only) return;
  const { path, query, signal } = assets;
  const cues = await loadStoryboard(`${path}/storyboard.vtt${query}`, signal);
  if (signal.aborted) return;
  storyboard = cues;
  seekBar.setCues(cues);
}

/** A download of each rung (an audio-only video: its audio as an .m4a). */
function showDownloads(video, { path, query }) {
  if (video.audio_only) {
    const link = el("a", {
      href: `${path}/download/audio.m4a${query}`,
      download: "",
      text: "Download the audio (M4A)",
    });
    $("download-rungs").replaceChildren(link);
    return;
  }
  const links = (video.qualities || []).map((quality) =>
    el("a", {
      href: `${path}/download/${encodeURIComponent(quality)}.mp4${query}`,
      download: "",
      text: quality,
      "aria-label": `Download ${quality} as MP4`,
    }),
  );
  $("download-rungs").replaceChildren(...(links.length ? ["MP4: ", ...links] : []));
}

function showRecord(video) {
  $("watch-title").textContent = video.filename || video.id;
  document.title = `${video.filename || video.id} · Video platform`;
}

/** The page's line of facts, and the embed code in the video's own shape. */
function showDetails(video, id, query) {
  const picture = video.width && video.height && !video.audio_only;
  const aspect = picture ? video.width / video.height : 16 / 9;
  $("embed-code").value = embedCode(id, query, video.filename, aspect);
  const size = video.width && video.height ? `${video.width}×${video.height}` : "";
  $("watch-meta").textContent = [
    video.audio_only ? "Audio only" : "",
    formatDuration(video.duration),
    size,
    formatBytes(video.size),
    video.audio_only ? "" : (video.qualities || []).join(" / "),
  ]
    .filter(Boolean)
    .join(" · ");
  $("download-original").setAttribute("aria-label", `Download the original file of ${video.filename}`);
}

/**
 * Poll the transcoding until the video can be played (true), it failed unplayable or the view
 * was left (false). Polling goes on after that to tell how far the encoding is.
 */
async function waitUntilPlayable(id, video, signal, assets) {
  if (video.status === "ok") return true;
  for (;;) {
    let status;
    try {
      status = await api("GET", `/transcode/status/${encodeURIComponent(id)}`);
    } catch (err) {
      status = { overall: video.status, progress: 0, playable: false, error: err.message };
    }
    if (signal.aborted) return false;
    showWaiting(status);
    if (status.playable || status.overall === "ok") {
      if (!FINISHED.has(status.overall)) followEncoding(id, signal, assets);
      else if (status.overall === "ok") refreshFinished(id, assets);
      return true;
    }
    if (status.overall === "failed") return false;
    await sleep(POLL_MS, signal).catch(() => null);
    if (signal.aborted) return false;
  }
}

async function followEncoding(id, signal, assets) {
  while (!signal.aborted) {
    await sleep(POLL_MS, signal).catch(() => null);
    if (signal.aborted) return;
    try {
      const status = await api("GET", `/transcode/status/${encodeURIComponent(id)}`);
      if (!signal.aborted) showWaiting(status);
      if (status.overall === "ok") refreshFinished(id, assets);
      if (FINISHED.has(status.overall)) return;
    } catch {
      // a missed poll is harmless: the next one tells
    }
  }
}

/** The video has just finished: its record now names its rungs. */
async function refreshFinished(id, assets) {
  try {
    const video = await api("GET", `/videos/${encodeURIComponent(id)}`);
    if (!assets.signal.aborted) showFinished(video, assets);
  } catch {
    // without the record there are no rung downloads to offer; playback goes on
  }
}

function showWaiting(status) {
  const percent = Math.floor(status.progress || 0);
  let text;
  if (status.overall === "ok") text = "";
  else if (status.overall === "failed") text = `Transcoding failed: ${status.error || "no reason given"}`;
  else if (status.playable) text = `Still transcoding (${percent}%): what is ready plays now, the rest follows.`;
  else if (status.overall === "stopped") text = `Transcoding is stopped at ${percent}%; it plays once an operator resumes it.`;
  else text = `${statusLabel(status.overall)} (${percent}%): playback starts as soon as the first part is ready.`;
  $("watch-wait").hidden = !text;
  $("watch-wait-text").textContent = text;
  $("watch-wait-progress").value = percent;
  $("watch-wait-progress").hidden = FINISHED.has(status.overall);
}

function startPlayback(source, video, start) {
  // hls.js first, even where the browser claims native HLS: only hls.js exposes the rungs for
  // the quality menu, and desktop Chromium (156 here) answers "maybe" to canPlayType for HLS
  // without playing it well. The browser's own HLS is the fallback where Media Source is
  // missing (iPhone Safari), with the quality left to the browser.
  // Only when asked: the page leaves the viewer's own mute as it was.
  if ("muted" in playback) video.muted = playback.muted;
  if ("loop" in playback) video.loop = playback.loop;
  if (window.Hls && Hls.isSupported()) {
    playWithHlsJs(video, source, start);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = source;
    captionsMenu.attachNative(video);
    $("current-level").textContent = "Quality chosen by the browser";
    window.__player = { hls: null, video, switches: [] };
    if (start) {
      video.addEventListener("loadedmetadata", () => (video.currentTime = start), { once: true });
    }
    if (playback.autoplay) autoplay(video);
  } else {
    onError("This browser cannot play HLS: hls.js did not load (run `make install`).");
  }
}

function playWithHlsJs(video, source, start) {
  // startPosition 0 (or the asked start): while encoding, the playlists are EVENT playlists,
  // which hls.js would otherwise join at the live edge instead of the beginning.
  hls = new Hls({ startPosition: start });
  // For tests and debugging in the console: the player and every rung it switched to
  // (`video` is the element that plays: the <audio> one for an audio-only video).
  window.__player = {
    hls,
    video,
    switches: [],
    get storyboard() {
      return storyboard;
    },
  };
  hls.on(Hls.Events.MANIFEST_PARSED, (_event, data) => {
    fillLevels(data.levels);
    if (playback.autoplay) autoplay(video);
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => {
    window.__player.switches.push(data.level);
    showCurrentLevel(data.level);
  });
  hls.on(Hls.Events.ERROR, onHlsError);
  captionsMenu.attachHls(hls);
  hls.loadSource(source);
  hls.attachMedia(video);
}

/**
 * Start playing without a click. Browsers allow that with the sound off only (unless the
 * site is trusted): when playing with sound is refused, play muted, as YouTube's embeds do;
 * the controls turn the sound on.
 */
async function autoplay(media) {
  const player = window.__player; // for tests: how autoplay went
  try {
    await media.play();
    player.autoplayed = media.muted ? "muted" : "sound";
  } catch (err) {
    if (err.name !== "NotAllowedError" || media.muted) return;
    media.muted = true;
    await media.play().catch(() => null);
    player.autoplayed = "muted-by-browser";
  }
}

function levelName(level) {
  if (level.height) return `${level.height}p`;
  return level.bitrate ? `${Math.round(level.bitrate / 1000)} kb/s` : "unknown";
}

function fillLevels(levels) {
  const options = [new Option("Auto", "-1")];
  levels.forEach((level, index) => {
    const rate = level.bitrate ? ` (${(level.bitrate / 1e6).toFixed(1)} Mb/s)` : "";
    options.push(new Option(`${levelName(level)}${rate}`, String(index)));
  });
  $("quality").replaceChildren(...options);
  $("quality").value = "-1";
  $("quality").disabled = levels.length < 2;
}

function showCurrentLevel(index) {
  const level = hls && hls.levels[index];
  if (!level) return;
  const mode = hls.autoLevelEnabled ? "Auto: playing" : "Playing";
  $("current-level").textContent = `${mode} ${levelName(level)}`;
}

function onQualityChange() {
  if (!hls) return;
  // currentLevel switches at once (the buffer is flushed); -1 hands the choice back to the
  // bandwidth estimate.
  hls.currentLevel = Number($("quality").value);
}

function onHlsError(_event, data) {
  if (!data.fatal) return; // hls.js recovers from non-fatal errors itself
  if (data.details === Hls.ErrorDetails.MANIFEST_INCOMPATIBLE_CODECS_ERROR) {
    // An HEVC ladder in a browser without an H.265 decoder: no rung it could play.
    onError(
      "This video is encoded in HEVC (H.265), which this browser cannot play. Watch it in " +
        "Safari or a browser with H.265 support, or download the original below.",
    );
    return;
  }
  if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recoveredMedia) {
    recoveredMedia = true;
    hls.recoverMediaError();
    return;
  }
  const status = data.response && data.response.code ? ` (HTTP ${data.response.code})` : "";
  onError(`Playback failed: ${responseDetail(data.networkDetails) || data.details}${status}`);
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

/** Stop playing and forget the video (leaving the view, or before showing another). */
export function stopPlayer() {
  if (session) session.abort();
  session = null;
  if (hls) hls.destroy();
  hls = null;
  recoveredMedia = false;
  window.__player = null;
  for (const media of [$("video"), $("audio")]) {
    media.removeAttribute("src");
    media.removeAttribute("poster");
    media.load();
  }
  showAudioOnly(false);
  storyboard = [];
  if (seekBar) seekBar.reset();
  if (captionsMenu) captionsMenu.reset();
  fillLevels([]);
  $("current-level").textContent = "";
  $("watch-wait").hidden = true;
}

/** Copy the text of the field `id` (the link, or the embed code). */
async function copyFrom(id, done) {
  const input = $(id);
  try {
    await navigator.clipboard.writeText(input.value);
    $("copy-status").textContent = done;
  } catch {
    // No clipboard permission (or not a secure context): leave it selected to copy by hand.
    input.focus();
    input.select();
    $("copy-status").textContent = "Press Ctrl+C (⌘C) to copy the selected text.";
  }
}
