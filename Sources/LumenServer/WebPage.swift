import Foundation
import Hummingbird
import NIOCore

/// The page at `/`: plain HTML, CSS and one JavaScript module, served from the binary (no build
/// step). It drives the A1111 routes: txt2img or img2img, `/sdapi/v1/progress` for the bar, and
/// `/lumen/v1/gallery` for this server's results.
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

    static let js = """
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
      img.alt = text.split('\\n')[0];
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

    async function poll(done) {
      while (!done.value) {
        try {
          const p = await getJSON('/sdapi/v1/progress');
          $('progress').value = p.progress;
          if (p.state.sampling_steps) $('status').textContent = `step ${p.state.sampling_step} of ${p.state.sampling_steps}`;
          // A step preview where the server was started with --preview-taesd.
          if (p.current_image) { $('step-preview').src = 'data:image/png;base64,' + p.current_image; $('step-preview').hidden = false; }
        } catch (e) { /* the next poll tries again */ }
        await new Promise((r) => setTimeout(r, 200));
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
      $('step-preview').hidden = true;
      const done = { value: false };
      const polling = poll(done);
      try {
        const r = await fetch(route, { method: 'POST', headers: headers(), body: JSON.stringify(body) });
        const answer = await r.json();
        if (!r.ok) throw new Error(answer.detail || r.statusText);
        const info = JSON.parse(answer.info);
        answer.images.forEach((b64, i) => addToGallery(b64, info.infotexts[i]));
        $('progress').value = 1;
        $('status').textContent = `done, seed ${info.seed}`;
      } catch (e) {
        $('status').textContent = 'error: ' + e.message;
      } finally {
        done.value = true;
        await polling;
        $('generate').disabled = false;
      }
    }

    $('form').addEventListener('submit', generate);
    $('clear-init').addEventListener('click', () => { initImage = null; $('init-row').hidden = true; });
    loadOptions().then(loadGallery).then(() => {
      // `#generate`: submit the form as it is once loaded (tools/serve_page_check.sh, headless Chromium).
      if (location.hash === '#generate') $('form').requestSubmit();
    }).catch((e) => { $('status').textContent = 'error: ' + e.message; });
    """

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
