// tus-js-client (from the npm registry) uploading one file to a started platform, for
// tests/test_tus.py. Prints one JSON line with what happened.
//
//   node upload.mjs resume   <endpoint> <file> <name> <url-storage.json>
//     sends the file in one PATCH, paced like a slow link, and aborts it mid-request once 40 %
//     is sent; then a new Upload finds the stored URL (findPreviousUploads) and resumes from
//     the offset the server kept.
//   node upload.mjs parallel <endpoint> <file> <name>
//     three partial uploads in parallel, each sending its first bytes with the creation
//     request, then the final upload that concatenates them.
import { createReadStream, statSync } from 'node:fs'
import { Readable, Transform } from 'node:stream'
import { DefaultHttpStack, FileUrlStorage, Upload } from 'tus-js-client'

const [mode, endpoint, file, name, storagePath] = process.argv.slice(2)
const size = statSync(file).size
// Retries cover a resume that meets the aborted PATCH still being committed (409 / 423).
const retryDelays = [100, 300, 1000, 2000, 4000]

// tus-js-client's own HTTP stack, with request bodies paced (40 ms a 64 KiB piece) so that an
// abort lands while the body is still being sent.
class PacedHttpStack extends DefaultHttpStack {
  createRequest(method, url) {
    const request = super.createRequest(method, url)
    const send = request.send.bind(request)
    request.send = (body = null) => {
      if (!(body instanceof Readable)) return send(body)
      const paced = body.pipe(
        new Transform({
          transform(piece, _encoding, done) {
            setTimeout(() => done(null, piece), 40)
          },
        }),
      )
      paced.size = body.size // keeps the Content-Length
      return send(paced)
    }
    return request
  }
}

function run({ before, ...options }, stopAt = Infinity) {
  return new Promise((resolve, reject) => {
    let stopped = false
    const upload = new Upload(createReadStream(file), {
      endpoint,
      metadata: { filename: name, filetype: 'video/mp4' },
      retryDelays,
      ...options,
      onProgress(sent) {
        if (!stopped && sent >= stopAt) {
          stopped = true
          // Not terminated: the upload stays on the server, its URL in the URL storage.
          upload.abort(false).then(() => resolve({ upload, aborted: true }), reject)
        }
      },
      onSuccess: () => resolve({ upload, aborted: false }),
      onError: reject,
    })
    before ? before(upload).then(() => upload.start(), reject) : upload.start()
  })
}

async function offsetOf(url) {
  const response = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
  return Number(response.headers.get('upload-offset'))
}

// The server commits an interrupted PATCH once it notices the client left: wait for that.
async function keptOffset(url) {
  for (let waited = 0; waited < 10000; waited += 50) {
    const offset = await offsetOf(url)
    if (offset > 0) return offset
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return 0
}

async function resume() {
  const storage = new FileUrlStorage(storagePath)
  const common = {
    urlStorage: storage,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
  }
  const first = await run({ ...common, httpStack: new PacedHttpStack() }, Math.floor(size * 0.4))
  if (!first.aborted) throw new Error('the first upload finished before it could be aborted')
  const interruptedUrl = first.upload.url
  const storedOffset = await keptOffset(interruptedUrl)
  let previous = []
  const second = await run({
    ...common,
    async before(upload) {
      previous = await upload.findPreviousUploads()
      if (previous.length) upload.resumeFromPreviousUpload(previous[0])
    },
  })
  return {
    interruptedUrl,
    storedOffset,
    previousUploads: previous.length,
    url: second.upload.url,
    finalOffset: await offsetOf(second.upload.url),
    size,
  }
}

async function parallel() {
  const done = await run({ parallelUploads: 3, uploadDataDuringCreation: true })
  return { url: done.upload.url, finalOffset: await offsetOf(done.upload.url), size }
}

const result = mode === 'resume' ? await resume() : await parallel()
console.log(JSON.stringify(result))
