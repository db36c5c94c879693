// The operator's console: services' health, disk, queue, running jobs, and per video stop,
// resume (retry when failed) and delete, plus resume all. Every /admin call carries the admin
// token kept in this browser (api.js).

import { adminToken, api, setAdminToken } from "./api.js";
import { $, el, formatBytes, statusLabel } from "./format.js";

const REFRESH_MS = 2000;
const STOPPABLE = new Set(["queued", "running"]);
const RESUMABLE = new Set(["stopped", "failed"]);

const rows = new Map(); // video id -> row parts
let timer = null;
let onError = () => {};

export function setUpConsole({ showError }) {
  onError = showError;
  $("console-refresh").addEventListener("click", refreshConsole);
  $("resume-all").addEventListener("click", () =>
    act("POST", "/admin/resume_all", (result) => `Resumed ${result.resumed.length} job(s).`),
  );
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken($("admin-token").value.trim());
  });
  $("token-clear").addEventListener("click", () => saveToken(""));
  showTokenState();
}

export function startConsole() {
  stopConsole();
  showTokenState(); // another tab may have saved or forgotten it
  refreshConsole();
  timer = setInterval(refreshConsole, REFRESH_MS);
}

export function stopConsole() {
  clearInterval(timer);
  timer = null;
}

/** Store the token (or forget it, when empty) and try again with it. */
export function saveToken(token) {
  setAdminToken(token);
  $("admin-token").value = "";
  showTokenState();
  if (timer) refreshConsole();
}

function showTokenState() {
  $("token-state").textContent = adminToken()
    ? "A token is saved in this browser and sent with every admin request."
    : "No token saved: enter the operator's admin token to use the console.";
}

let refreshing = null;

export function refreshConsole() {
  refreshing ??= Promise.all([loadStatus(), loadVideos()]).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function loadStatus() {
  let status;
  try {
    status = await api("GET", "/admin/status");
  } catch (err) {
    $("console-message").textContent = `Could not load the system status: ${err.message}`;
    return;
  }
  $("sys-database").textContent = status.database;
  $("sys-queue").textContent = String(status.queue_depth);
  const counts = Object.entries(status.videos_by_status || {});
  $("sys-videos").textContent = counts.length
    ? counts.map(([name, count]) => `${count} ${statusLabel(name).toLowerCase()}`).join(", ")
    : "none";
  const { total, used, free } = status.disk;
  $("sys-disk-bar").value = total ? Math.round((used / total) * 100) : 0;
  $("sys-disk").textContent = `${formatBytes(used)} used of ${formatBytes(total)}, ${formatBytes(free)} free`;
  renderServices(status.services || {});
  renderRunning(status.running_jobs || []);
}

function renderServices(services) {
  const body = $("services-table").tBodies[0];
  body.replaceChildren(
    ...Object.entries(services).map(([name, health]) => {
      const ok = health.status === "ok";
      return el(
        "tr",
        {},
        el("th", { scope: "row", text: name }),
        el("td", {}, el("span", { className: `badge ${ok ? "status-ok" : "status-failed"}`, text: health.status })),
        el("td", { text: health.latency_ms === null ? "" : `${Math.round(health.latency_ms)} ms` }),
        el("td", { className: "wrap", text: health.error || health.url || "" }),
      );
    }),
  );
}

function renderRunning(jobs) {
  $("running-empty").hidden = jobs.length > 0;
  $("running-list").replaceChildren(
    ...jobs.map((job) =>
      el(
        "li",
        {},
        el("code", { text: job.upload_id.slice(0, 8) }),
        ` ${statusLabel(job.overall)} ${Math.floor(job.progress)}% `,
        el("progress", {
          max: 100,
          value: job.progress,
          "aria-label": `Progress of job ${job.upload_id}`,
        }),
      ),
    ),
  );
}

async function loadVideos() {
  let videos;
  try {
    videos = await api("GET", "/admin/videos");
  } catch (err) {
    $("console-message").textContent = `Could not load the videos: ${err.message}`;
    return;
  }
  const body = $("admin-videos").tBodies[0];
  const seen = new Set(videos.map((video) => video.id));
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  videos.forEach((video, index) => {
    const row = rows.get(video.id) || newRow(video);
    rows.set(video.id, row);
    renderRow(row, video);
    if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
  });
  $("admin-empty").hidden = videos.length > 0;
  $("admin-videos").hidden = videos.length === 0;
}

function newRow(video) {
  const id = encodeURIComponent(video.id);
  const row = {
    name: el("a", { href: `#/watch/${id}` }),
    status: el("span", { className: "badge" }),
    bar: el("progress", { max: 100, value: 0 }),
    percent: el("span", { className: "percent" }),
    error: el("div", { className: "video-error" }),
    stop: el("button", { type: "button", text: "Stop" }),
    resume: el("button", { type: "button", text: "Resume" }),
    remove: el("button", { type: "button", className: "danger", text: "Delete" }),
  };
  row.stop.addEventListener("click", () =>
    act("POST", `/admin/videos/${id}/stop`, () => `Stopped ${row.label}.`),
  );
  row.resume.addEventListener("click", () =>
    act("POST", `/admin/videos/${id}/resume`, () => `Queued ${row.label} again.`),
  );
  row.remove.addEventListener("click", () => confirmDelete(row, id));
  row.tr = el(
    "tr",
    { dataset: { id: video.id } },
    el("td", { className: "wrap" }, row.name, el("div", { className: "muted small", text: video.id })),
    el("td", {}, row.status, row.error),
    el("td", { className: "progress-cell" }, row.bar, row.percent),
    el("td", {}, el("div", { className: "actions" }, row.stop, row.resume, row.remove)),
  );
  return row;
}

function renderRow(row, video) {
  const job = video.job;
  const status = job ? job.overall : video.status;
  row.label = video.filename || video.id;
  row.name.textContent = row.label;
  row.tr.dataset.status = status;
  row.status.textContent = statusLabel(status);
  row.status.className = `badge status-${status}`;
  const progress = job ? Math.floor(job.progress) : status === "ok" ? 100 : 0;
  row.bar.value = progress;
  row.bar.setAttribute("aria-label", `Transcoding of ${row.label}`);
  row.percent.textContent = ` ${progress}%`;
  row.error.textContent = (job && job.error) || video.error || "";
  row.error.hidden = !row.error.textContent;
  row.stop.disabled = !STOPPABLE.has(status);
  row.resume.disabled = !RESUMABLE.has(status);
  const resumeLabel = status === "failed" ? "Retry" : "Resume";
  if (row.resume.textContent !== resumeLabel) row.resume.textContent = resumeLabel;
  row.stop.setAttribute("aria-label", `Stop transcoding ${row.label}`);
  row.resume.setAttribute("aria-label", `${resumeLabel} transcoding ${row.label}`);
  row.remove.setAttribute("aria-label", `Delete ${row.label}`);
}

/** Run an admin action, say what happened, and show the new state at once. */
async function act(method, path, describe) {
  try {
    const result = await api(method, path);
    $("console-message").textContent = describe(result);
  } catch (err) {
    onError(err.message);
  }
  await refreshConsole();
}

function confirmDelete(row, id) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent =
    `“${row.label}” will be deleted with its original and every rendition. This cannot be undone.`;
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    () => {
      if (dialog.returnValue === "confirm") {
        act("DELETE", `/admin/videos/${id}`, () => `Deleted ${row.label}.`);
      } else {
        row.remove.focus();
      }
    },
    { once: true },
  );
  dialog.showModal();
}
