// Hashes a File with SHA-256 off the main thread, slice by slice, so the page stays responsive
// and memory stays flat whatever the size. hash-wasm is incremental (WebCrypto's digest is not)
// and comes from npm through the gateway (/vendor/...). A classic worker: importScripts needs it.
/* global hashwasm */
importScripts("/vendor/sha256.umd.min.js");

const SLICE = 8 * 1024 * 1024;

self.onmessage = async ({ data: { file } }) => {
  try {
    const hasher = await hashwasm.createSHA256();
    hasher.init();
    for (let offset = 0; offset < file.size; offset += SLICE) {
      const slice = file.slice(offset, offset + SLICE);
      hasher.update(new Uint8Array(await slice.arrayBuffer()));
      self.postMessage({ type: "progress", done: Math.min(offset + SLICE, file.size) });
    }
    self.postMessage({ type: "done", sha256: hasher.digest("hex") });
  } catch (err) {
    self.postMessage({ type: "error", message: String((err && err.message) || err) });
  }
};
