// The embeddable player (/embed/{id}, in an <iframe> on any site): the page's own player
// module (player.js: hls.js, quality menu, poster, storyboard previews, signed links) without
// the site around it, filling the frame. Messages (an unknown video, a bad option) show inside
// the frame; a bad option is ignored, never a broken player.

import { parseEmbedOptions } from "./embed-options.js";
import { $, el } from "./format.js";
import { playbackToken, setUpPlayer, showVideo } from "./player.js";

/** Show a message over the player (it keeps playing underneath). */
function showMessage(text) {
  $("embed-message-list").append(el("li", { text }));
  $("embed-messages").hidden = false;
}

function dismissMessages() {
  $("embed-messages").hidden = true;
  $("embed-message-list").replaceChildren();
}

/** The video id of /embed/{id} (the gateway serves this page at no other path). */
function videoId() {
  const match = location.pathname.match(/^\/embed\/([^/]+)\/?$/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** The title links to the video's watch page, in a new tab (not inside the frame). */
function linkTitle(id) {
  const token = playbackToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  $("watch-link").href = `/watch/${encodeURIComponent(id)}${query}`;
}

/** While the video plays, the title overlay fades (it comes back on hover and at pause). */
function followPlaying() {
  for (const media of [$("video"), $("audio")]) {
    media.addEventListener("playing", () => document.documentElement.classList.add("playing"));
    media.addEventListener("pause", () => document.documentElement.classList.remove("playing"));
  }
}

/** No video to show: no player controls, no link to a watch page of nothing; the message stays. */
function unavailable() {
  document.documentElement.classList.add("unavailable");
  $("watch-link").removeAttribute("href");
  $("video").controls = false;
}

function main() {
  const { options, problems } = parseEmbedOptions(location.search);
  // For tests and for whoever debugs an embed in the console.
  window.__embed = { options, problems };
  $("embed-dismiss").addEventListener("click", dismissMessages);
  setUpPlayer({ showError: showMessage, chrome: false, playback: options, unavailable });
  followPlaying();
  problems.forEach(showMessage);
  const id = videoId();
  linkTitle(id);
  showVideo(id);
}

main();
