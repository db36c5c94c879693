// The embed's options, from its query: ?autoplay=1&muted=1&start=SECONDS&loop=1. Each value is
// checked; a bad one is left out and named in `problems`, so the video still plays and whoever
// wrote the <iframe> sees what to fix. Other parameters (the playback token) are not options.

const FLAGS = new Map([
  ["1", true],
  ["0", false],
  ["true", true],
  ["false", false],
]);
const FLAG_NAMES = ["autoplay", "muted", "loop"];
const SECONDS = /^\d{1,6}(?:\.\d{1,3})?$/;

const shown = (value) => (value.length > 32 ? `${value.slice(0, 32)}…` : value);

/** {options: {autoplay, muted, loop, start}, problems: [message]} from a query string. */
export function parseEmbedOptions(search) {
  const params = new URLSearchParams(search);
  const options = {};
  const problems = [];
  for (const name of FLAG_NAMES) {
    if (!params.has(name)) continue;
    const value = params.get(name);
    if (FLAGS.has(value)) options[name] = FLAGS.get(value);
    else problems.push(`${name}=${shown(value)} is ignored: use ${name}=1 (on) or ${name}=0 (off).`);
  }
  if (params.has("start")) {
    const value = params.get("start");
    if (SECONDS.test(value)) options.start = Number(value);
    else problems.push(`start=${shown(value)} is ignored: give the start in seconds, e.g. start=30.`);
  }
  return { options, problems };
}
