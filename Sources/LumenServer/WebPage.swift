import Foundation
import Hummingbird
import NIOCore

/// The page at `/`: plain HTML, CSS and one JavaScript module, served from the binary (no build
/// step). It drives the A1111 routes (txt2img or img2img), follows each request's job by the id
/// it chose (`X-Lumen-Job-Id`) on `/lumen/v1/jobs/ID/events` for the bar and the step previews,
/// and shows `/lumen/v1/gallery`, this server's results.
enum WebPage {
    static let html = """
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>Lumen</title>
    <link rel="stylesheet" href="/static/style.css">
    <script type="module" src="/static/app.js"></script>
    </head>
    <body>
    <h1>Lumen</h1>
    <form id="form">
      <label>Prompt <textarea id="prompt" rows="2" required>a red circle on a blue background</textarea></label>
      <label>Negative prompt <input id="negative" value=""></label>
      <div class="row">
        <label>Model <select id="model"></select></label>
        <label>Width <input id="width" type="number" value="64" step="8" min="8"></label>
        <label>Height <input id="height" type="number" value="64" step="8" min="8"></label>
        <label>Steps <input id="steps" type="number" value="20" min="1"></label>
        <label>Guidance <input id="guidance" type="number" value="7" step="0.5"></label>
        <label>Sampler <select id="sampler"></select></label>
        <label>Seed <input id="seed" type="number" value="-1"></label>
      </div>
      <div class="row" id="init-row" hidden>
        <img id="init-preview" alt="init image">
        <label>Denoising strength <input id="strength" type="number" value="0.6" step="0.05" min="0.05" max="1"></label>
        <button type="button" id="clear-init">No init image</button>
      </div>
      <div class="row">
        <label>API key <input id="key" type="password" placeholder="(if the server has one)"></label>
        <button id="generate" type="submit">Generate</button>
      </div>
    </form>
    <progress id="progress" max="1" value="0"></progress> <span id="status"></span>
    <img id="step-preview" alt="step preview" hidden>
    <h2>Gallery</h2>
    <div id="gallery"></div>
    </body>
    </html>
    """

    static let css = """
    [hidden] { display: none !important; }
    body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 70em; }
    label { display: inline-flex; flex-direction: column; margin: 0.3em 0.6em 0.3em 0; font-size: 0.9em; }
    textarea { width: 40em; }
    .row { display: flex; flex-wrap: wrap; align-items: end; }
    input[type=number] { width: 6em; }
    progress { width: 30em; height: 1.2em; }
    #gallery { display: flex; flex-wrap: wrap; gap: 1em; }
    figure { margin: 0; width: 16em; font-size: 0.8em; }
    #step-preview { width: 64px; height: 64px; image-rendering: pixelated; vertical-align: middle; }
    figure img, #init-preview { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
    figcaption { white-space: pre-wrap; word-break: break-word; }
    """

    static let js = #"""
    const $ = (id) => document.getElementById(id);
    let initImage = null;

    function headers() {
      const h = { 'Content-Type': 'application/json' };
      const key = $('key').value || localStorage.getItem('lumen-key') || '';
      if (key) { h['Authorization'] = 'Bearer ' + key; localStorage.setItem('lumen-key', key); }
      return h;
    }

    async function getJSON(path) {
      const r = await fetch(path, { headers: headers() });
      if (!r.ok) throw new Error((await r.json()).detail || r.statusText);
      return r.json();
    }

    async function loadOptions() {
      for (const m of await getJSON('/sdapi/v1/sd-models')) $('model').add(new Option(m.model_name, m.model_name));
      for (const s of await getJSON('/sdapi/v1/samplers')) $('sampler').add(new Option(s.name, s.name));
      $('sampler').value = 'Euler a';
    }

    function addToGallery(b64, text) {
      const fig = document.createElement('figure');
      const img = document.createElement('img');
      img.src = 'data:image/png;base64,' + b64;
      img.alt = text.split('\n')[0];
      const cap = document.createElement('figcaption');
      cap.textContent = text;
      const use = document.createElement('button');
      use.textContent = 'Use as init image';
      use.addEventListener('click', () => {
        initImage = b64;
        $('init-preview').src = img.src;
        $('init-row').hidden = false;
      });
      fig.append(img, use, cap);
      $('gallery').prepend(fig);
    }

    async function loadGallery() {
      for (const item of (await getJSON('/lumen/v1/gallery')).items) addToGallery(item.b64_png, item.infotext || item.prompt);
    }

    // A job id for the request (X-Lumen-Job-Id), so that its events can be opened before it is sent.
    function newJobID() {
      const bytes = crypto.getRandomValues(new Uint8Array(12));
      return 'page-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    }

    // Shows one of the job's events (or its record, when polling): the bar, the status, the preview.
    function show(name, e) {
      if (name === 'queued') {
        $('status').textContent = e.position ? `queued, ${e.position} ahead` : 'queued';
      } else if ((name === 'step' || name === 'started') && (e.total || e.steps)) {
        const total = e.total || e.steps, step = e.step || 0;
        $('progress').value = step / total;
        $('status').textContent = `step ${step} of ${total}` + (e.images > 1 ? `, image ${e.image + 1} of ${e.images}` : '');
      }
      // A step preview where the server was started with --preview-taesd.
      if (e.preview) {
        $('step-preview').src = 'data:image/png;base64,' + e.preview;
        $('step-preview').dataset.step = e.step;
        $('step-preview').hidden = false;
      }
    }

    // Reads the job's server-sent events (GET /lumen/v1/jobs/ID/events) with fetch rather than
    // EventSource, which cannot send the API key's header. Resolves true after the job's final
    // event, false when the stream ended without one (the connection dropped).
    async function readEvents(id, signal) {
      const r = await fetch(`/lumen/v1/jobs/${id}/events`, { headers: headers(), signal });
      if (!r.ok) throw new Error(`events: ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        text += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = text.indexOf('\n\n')) >= 0) {
          const block = text.slice(0, end);
          text = text.slice(end + 2);
          let name = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;  // `: keep-alive`
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trimStart();
          }
          if (!data) continue;
          const e = JSON.parse(data);
          show(name, e);
          $('progress').dataset.events = +($('progress').dataset.events || 0) + 1;
          if (name === 'done' || name === 'error' || name === 'cancelled') return true;
        }
      }
    }

    // Follows the job until its final event or until `signal` aborts: the event stream, opened
    // again if it drops (it begins with where the job stands, latest preview included); after
    // three streams that end without the final event, the job's record polled every half second.
    async function follow(id, signal) {
      const pause = (ms) => new Promise((r) => setTimeout(r, ms));
      for (let failures = 0; failures < 3 && !signal.aborted;) {
        try {
          if (await readEvents(id, signal)) return;
        } catch (e) {
          if (signal.aborted) return;
        }
        failures += 1;
        await pause(250);
      }
      $('progress').dataset.source = 'polling';
      while (!signal.aborted) {
        try {
          const job = await getJSON(`/lumen/v1/jobs/${id}`);
          show(job.state === 'queued' ? 'queued' : 'step', job);
          if (['done', 'failed', 'cancelled'].includes(job.state)) return;
        } catch (e) { /* the next poll tries again */ }
        await pause(500);
      }
    }

    async function generate(event) {
      event.preventDefault();
      const body = {
        prompt: $('prompt').value, negative_prompt: $('negative').value,
        width: +$('width').value, height: +$('height').value, steps: +$('steps').value,
        cfg_scale: +$('guidance').value, sampler_name: $('sampler').value, seed: +$('seed').value,
        override_settings: { sd_model_checkpoint: $('model').value },
      };
      let route = '/sdapi/v1/txt2img';
      if (initImage) { route = '/sdapi/v1/img2img'; body.init_images = [initImage]; body.denoising_strength = +$('strength').value; }
      $('generate').disabled = true;
      $('status').textContent = 'queued';
      $('progress').value = 0;
      $('progress').dataset.events = 0;
      delete $('progress').dataset.source;
      $('step-preview').hidden = true;
      const id = newJobID();
      const stop = new AbortController();
      // Opened first: the events route waits a moment for the job that this id will name.
      const following = follow(id, stop.signal);
      try {
        const r = await fetch(route, { method: 'POST', headers: { ...headers(), 'X-Lumen-Job-Id': id }, body: JSON.stringify(body) });
        const answer = await r.json();
        if (!r.ok) throw new Error(answer.detail || r.statusText);
        // The job's last events (its final step's preview) arrive with or just after the answer.
        await Promise.race([following, new Promise((r) => setTimeout(r, 1000))]);
        const info = JSON.parse(answer.info);
        answer.images.forEach((b64, i) => addToGallery(b64, info.infotexts[i]));
        $('progress').value = 1;
        $('status').textContent = `done, seed ${info.seed}`;
      } catch (e) {
        $('status').textContent = 'error: ' + e.message;
      } finally {
        stop.abort();
        await following;
        $('generate').disabled = false;
      }
    }

    $('form').addEventListener('submit', generate);
    $('clear-init').addEventListener('click', () => { initImage = null; $('init-row').hidden = true; });
    loadOptions().then(loadGallery).then(() => {
      // `#generate`: submit the form as it is once loaded (tools/serve_page_check.sh, headless Chromium).
      if (location.hash === '#generate') $('form').requestSubmit();
    }).catch((e) => { $('status').textContent = 'error: ' + e.message; });
    """#

    static func response(_ text: String, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

extension LumenServer {
    func addPageRoutes(_ router: Router<LumenRequestContext>) {
        router.get("/") { _, _ in WebPage.response(WebPage.html, type: "text/html; charset=utf-8") }
        router.get("/static/style.css") { _, _ in WebPage.response(WebPage.css, type: "text/css; charset=utf-8") }
        router.get("/static/app.js") { _, _ in WebPage.response(WebPage.js, type: "text/javascript; charset=utf-8") }
        router.get("/lumen/v1/gallery") { _, _ in
            jsonResponse(["items": self.results.all.map { item -> [String: Any] in
                var o: [String: Any] = ["id": item.id, "b64_png": item.png.base64EncodedString()]
                for (k, v) in item.parameters { o[k] = v }
                return o
            }])
        }
    }
}
