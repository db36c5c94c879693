// The ladder codec an upload asks for. HEVC (H.265) needs about 40% fewer bits than H.264 but
// plays only where the browser decodes it (Safari; Chrome and Edge with a hardware decoder),
// so the upload panel offers it only in a browser that can play it back.

import { el } from "./format.js";

// The highest HEVC ladder rung: Main profile, level 4 (1080p at 30 fps), progressive.
export const HEVC_PROBE = 'video/mp4; codecs="hvc1.1.6.L120.90"';

/** Whether this browser can play an HEVC ladder the way the player would play it. */
export function canPlayHevc() {
  // hls.js feeds Media Source where there is one (it asks the same question itself).
  const source = window.ManagedMediaSource || window.MediaSource;
  if (source) return source.isTypeSupported(HEVC_PROBE);
  // No Media Source (iPhone Safari): the browser's own HLS plays what it can decode.
  return document.createElement("video").canPlayType(HEVC_PROBE) !== "";
}

/**
 * The codec choice of the upload panel, or null where HEVC cannot be played (then uploads
 * send no codec: the server's DEFAULT_CODEC applies). `choice.value` is "", "h264" or "hevc".
 */
export function codecChoice() {
  if (!canPlayHevc()) return null;
  const select = el(
    "select",
    { id: "codec", name: "codec" },
    new Option("Server default", ""),
    new Option("H.264: plays everywhere", "h264"),
    new Option("HEVC (H.265): smaller, plays where H.265 does", "hevc"),
  );
  const field = el(
    "p",
    { id: "codec-choice", className: "hint" },
    el("label", { for: "codec", text: "Encode new uploads as " }),
    select,
  );
  return { field, select };
}
