// The upload panel: drop zone and file picker, one row per file with its progress bar (bytes,
// speed, time left), pause/resume, and the uploads a reload interrupted.

import { $, el, formatBytes, formatEta } from "./format.js";
import { codecChoice } from "./codec.js";
import { ResumableUpload, fileKey, forgetUnfinished, unfinishedUploads } from "./upload.js";

const STATE_LABELS = {
  hashing: "Preparing",
  starting: "Starting",
  uploading: "Uploading",
  paused: "Paused",
  waiting: "Waiting for the connection",
  completing: "Finishing",
  done: "Uploaded",
  failed: "Failed",
};

const uploads = new Map(); // fileKey -> {upload, row}
let onUploaded = () => {};
let codec = null; // the codec choice, where this browser can play HEVC

/** Wire the drop zone and picker; `uploaded(video)` runs after each upload completes. */
export function setUpUploads({ uploaded }) {
  onUploaded = uploaded;
  codec = codecChoice();
  if (codec) $("drop-zone").after(codec.field);
  const input = $("file-input");
  $("choose-files").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = ""; // picking the same file again (to resume it) must fire change again
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    addFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone would otherwise make the browser navigate to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  setInterval(refreshRows, 1000); // speed and time left age even when no event arrives
  showUnfinished();
}

function addFiles(files) {
  for (const file of files) {
    const key = fileKey(file);
    const known = uploads.get(key);
    if (known && known.upload.state !== "done") {
      if (!known.upload.active) known.upload.resume();
      continue;
    }
    const upload = new ResumableUpload(file, { codec: codec ? codec.select.value : "" });
    const row = uploadRow(upload);
    uploads.set(key, { upload, row });
    $("upload-list").prepend(row.item);
    upload.onChange(() => scheduleRender(key));
    upload.start();
  }
  showUnfinished();
}

function uploadRow(upload) {
  const name = upload.file.name;
  const row = {
    state: el("span", { className: "badge" }),
    bar: el("progress", { max: 100, value: 0, "aria-label": `Upload of ${name}` }),
    detail: el("p", { className: "upload-detail" }),
    message: el("p", { className: "upload-message", role: "status" }),
    toggle: el("button", { type: "button", onclick: () => toggle(upload) }),
    watch: el("a", { className: "button", hidden: true, text: "Watch" }),
  };
  row.item = el(
    "li",
    { className: "upload-item", dataset: { key: upload.key } },
    el("div", { className: "upload-head" }, el("strong", { text: name }), row.state),
    row.bar,
    row.detail,
    row.message,
    el("div", { className: "upload-actions" }, row.toggle, row.watch),
  );
  return row;
}

function toggle(upload) {
  if (upload.active) upload.pause();
  else upload.resume();
}

const pending = new Set();

function scheduleRender(key) {
  if (pending.size === 0) requestAnimationFrame(flush);
  pending.add(key);
}

function flush() {
  for (const key of pending) {
    const entry = uploads.get(key);
    if (entry) render(entry);
  }
  pending.clear();
}

function refreshRows() {
  for (const entry of uploads.values()) if (entry.upload.state === "uploading") render(entry);
}

function render({ upload, row }) {
  const { file, state } = upload;
  const sent = upload.sentBytes;
  const percent = file.size ? Math.floor((sent / file.size) * 100) : 100;
  const hashing = state === "hashing";
  row.item.dataset.state = state;
  row.item.dataset.uploadId = upload.uploadId || "";
  row.state.textContent = STATE_LABELS[state] || state;
  row.state.className = `badge state-${state}`;
  row.bar.value = hashing ? Math.floor((upload.hashed / Math.max(1, file.size)) * 100) : percent;
  row.bar.setAttribute("aria-valuetext", `${percent}% sent`);
  row.detail.textContent = detailText(upload, sent, percent);
  if (row.message.textContent !== upload.message) row.message.textContent = upload.message;
  renderButtons(upload, row);
  if (state === "done" && !row.finished) {
    row.finished = true;
    showUnfinished();
    if (upload.video) onUploaded(upload.video);
  }
}

function detailText(upload, sent, percent) {
  const parts = [`${formatBytes(sent)} of ${formatBytes(upload.file.size)} (${percent}%)`];
  const speed = upload.speed;
  if (speed) parts.push(`${formatBytes(speed)}/s`);
  const left = upload.secondsLeft;
  if (left !== null && upload.state === "uploading") parts.push(`${formatEta(left)} left`);
  if (upload.totalChunks) {
    parts.push(`${upload.received.size} of ${upload.totalChunks} chunks on the server`);
  }
  return parts.join(" · ");
}

function renderButtons(upload, row) {
  const { state } = upload;
  const canToggle = ["hashing", "starting", "uploading", "paused", "waiting", "failed"];
  row.toggle.hidden = !canToggle.includes(state);
  const label = upload.active ? "Pause" : state === "failed" ? "Retry" : "Resume";
  if (row.toggle.textContent !== label) {
    row.toggle.textContent = label;
    row.toggle.setAttribute("aria-label", `${label} upload of ${upload.file.name}`);
  }
  if (state === "done" && upload.uploadId) {
    row.watch.hidden = false;
    row.watch.href = `#/watch/${upload.uploadId}`;
    row.watch.setAttribute("aria-label", `Watch ${upload.file.name}`);
  }
}

/** List the uploads a reload interrupted that this page has not taken over yet. */
function showUnfinished() {
  const waiting = unfinishedUploads().filter((record) => !uploads.has(record.key));
  const items = waiting.map((record) =>
    el(
      "li",
      {},
      el("span", { text: `${record.filename} (${formatBytes(record.size)})` }),
      " ",
      el("button", {
        type: "button",
        className: "link-button",
        text: "Forget",
        "aria-label": `Forget the unfinished upload of ${record.filename}`,
        onclick: () => {
          forgetUnfinished(record.key);
          showUnfinished();
        },
      }),
    ),
  );
  $("unfinished-list").replaceChildren(...items);
  $("unfinished").hidden = items.length === 0;
}
