// The page: a hash router over three views (#/ upload + library, #/watch/{id}, #/console),
// the error box and the admin-token prompt. The gateway also serves the page at /watch/{id}
// (a clean link, with the oEmbed discovery link in its HTML): with no hash, that path is the
// watch view. Plain ES modules, no build step; every request goes to the gateway (same origin).

import { onUnauthorized } from "./api.js";
import { saveToken, setUpConsole, startConsole, stopConsole } from "./console.js";
import { $ } from "./format.js";
import { loadLibrary, setUpLibrary, startLibrary, stopLibrary } from "./library.js";
import { setUpPlayer, showVideo, stopPlayer } from "./player.js";
import { setUpUploads } from "./upload-view.js";

const TITLE = "Video platform";

// ---------------------------------------------------------------- messages

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

let tokenPromptDismissed = false; // the console's own field still takes one

/** A 401 from an admin call: ask for the token, unless the dialog is open or was dismissed. */
function askForToken(error) {
  const dialog = $("token-dialog");
  if (dialog.open || tokenPromptDismissed) return;
  $("token-dialog-text").textContent =
    `${error.message} Enter the admin token; it is kept in this browser only.`;
  $("token-dialog-input").value = "";
  dialog.showModal();
}

/** Read the dialog as it is submitted (method=dialog: the close event comes later). */
function onTokenDialogSubmit(event) {
  const token = $("token-dialog-input").value.trim();
  $("token-dialog-input").value = "";
  if (event.submitter && event.submitter.value === "save" && token) saveToken(token);
  else tokenPromptDismissed = true;
}

// ---------------------------------------------------------------- routing

const VIEWS = {
  home: { section: "view-home", heading: "upload-title", enter: startLibrary, leave: stopLibrary },
  watch: { section: "view-watch", heading: "watch-title", enter: showVideo, leave: stopPlayer },
  console: {
    section: "view-console",
    heading: "console-title",
    enter: startConsole,
    leave: stopConsole,
  },
};

let current = null;

/** The view and its argument for a location; anything unknown is the library. */
function parse(hash, pathname) {
  const watch = hash.match(/^#\/watch\/([^/?#]+)(?:\?[^#]*)?$/);
  if (watch) return ["watch", decodeURIComponent(watch[1])];
  if (hash === "#/console") return ["console", null];
  const page = pathname.match(/^\/watch\/([^/]+)\/?$/);
  // A hash that is no route (the skip link's #main) leaves the path's view in place.
  if (page && !hash.startsWith("#/")) return ["watch", decodeURIComponent(page[1])];
  return ["home", null];
}

function route() {
  const [name, arg] = parse(location.hash, location.pathname);
  const view = VIEWS[name];
  if (current) current.leave();
  for (const other of Object.values(VIEWS)) $(other.section).hidden = other !== view;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const first = current === null;
  current = view;
  clearError();
  document.title = name === "console" ? `Console · ${TITLE}` : TITLE;
  view.enter(arg);
  // Screen readers and keyboards land on the new view, not where the old one was.
  if (!first) $(view.heading).focus();
}

function main() {
  setUpUploads({
    uploaded: () => loadLibrary(),
  });
  setUpLibrary({ showError });
  setUpPlayer({ showError });
  setUpConsole({ showError });
  onUnauthorized(askForToken);
  $("error-close").addEventListener("click", clearError);
  $("token-dialog-form").addEventListener("submit", onTokenDialogSubmit);
  // Escape closes without a submit: that is a dismissal too.
  $("token-dialog").addEventListener("cancel", () => {
    tokenPromptDismissed = true;
  });
  window.addEventListener("hashchange", route);
  route();
}

main();
