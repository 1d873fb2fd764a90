// app.js - the page of `loco serve` (docs/serve.md): choose an image, paint
// the region, find directions (progress by server-sent events, cancel),
// move sliders (each release renders from the cached x_t), transfer,
// download. Plain browser JavaScript, no build step.
'use strict';

const TOKEN = document.querySelector('meta[name=loco-token]').content;
const $ = (id) => document.getElementById(id);
const st = {
  info: null, session: null, H: 32, W: 32, mask: null, labels: false,
  dirMask: null, rank: 0, strengths: [], job: null,
  reconData: null, editData: null, hasTransfer: false,
};

function setStatus(msg, isError) {
  const s = $('status');
  s.textContent = msg || '';
  s.className = isError ? 'error' : '';
}

async function api(method, path, body, ctype) {
  const headers = { 'X-Loco-Token': TOKEN };
  let data = body;
  if (body !== undefined && !(body instanceof Blob)) {
    headers['Content-Type'] = 'application/json';
    data = JSON.stringify(body);
  } else if (body instanceof Blob) headers['Content-Type'] = ctype || 'image/png';
  const r = await fetch('/api' + path, { method, headers, body: data });
  const j = await r.json().catch(() => ({ error: 'bad reply (' + r.status + ')' }));
  if (!r.ok) {
    const e = new Error(j.error || ('HTTP ' + r.status));
    e.status = r.status;
    throw e;
  }
  return j;
}

// ---- images on canvases (nearest-neighbour zoom) ---------------------------

function loadImage(url) {
  return new Promise((res, rej) => {
    const im = new Image();
    im.onload = () => res(im);
    im.onerror = () => rej(new Error('cannot show the image'));
    im.src = url;
  });
}

async function show(canvasId, url) {
  const c = $(canvasId), g = c.getContext('2d');
  g.imageSmoothingEnabled = false;
  if (!url) { g.clearRect(0, 0, c.width, c.height); return null; }
  const im = await loadImage(url);
  g.drawImage(im, 0, 0, c.width, c.height);
  // the image at its own size, for the difference view and tests
  const o = document.createElement('canvas');
  o.width = im.width; o.height = im.height;
  const og = o.getContext('2d');
  og.drawImage(im, 0, 0);
  return og.getImageData(0, 0, im.width, im.height);
}

let baseImage = null; // the session's image (ImageBitmap-like) for the mask view

function drawMaskView(preview) {
  const c = $('mask-canvas'), g = c.getContext('2d');
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, c.width, c.height);
  if (baseImage) g.drawImage(baseImage, 0, 0, c.width, c.height);
  if (!st.mask) return;
  const sx = c.width / st.W, sy = c.height / st.H;
  g.fillStyle = 'rgba(255, 30, 30, 0.45)';
  for (let y = 0; y < st.H; y++)
    for (let x = 0; x < st.W; x++) {
      let m = st.mask[y * st.W + x];
      if (preview) m = preview(x, y, m);
      if (m) g.fillRect(x * sx, y * sy, sx, sy);
    }
  let k = 0;
  for (const v of st.mask) k += v;
  $('mask-count').textContent = k;
}

function drawDiff() {
  const c = $('view-diff'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  if (!st.reconData || !st.editData) return;
  const W = st.W, H = st.H, sx = c.width / W, sy = c.height / H;
  const a = st.reconData.data, b = st.editData.data;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 4;
      const d = (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2])) / 3;
      const v = Math.min(255, Math.round(4 * d));
      g.fillStyle = `rgb(${v},${v},${v})`;
      g.fillRect(x * sx, y * sy, sx, sy);
    }
  const m = st.dirMask;
  if (!m) return;
  g.strokeStyle = '#f33';
  g.lineWidth = 2;
  g.beginPath();
  const inside = (x, y) => x >= 0 && y >= 0 && x < W && y < H && m[y * W + x];
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      if (!inside(x, y)) continue;
      if (!inside(x, y - 1)) { g.moveTo(x * sx, y * sy); g.lineTo((x + 1) * sx, y * sy); }
      if (!inside(x, y + 1)) { g.moveTo(x * sx, (y + 1) * sy); g.lineTo((x + 1) * sx, (y + 1) * sy); }
      if (!inside(x - 1, y)) { g.moveTo(x * sx, y * sy); g.lineTo(x * sx, (y + 1) * sy); }
      if (!inside(x + 1, y)) { g.moveTo((x + 1) * sx, y * sy); g.lineTo((x + 1) * sx, (y + 1) * sy); }
    }
  g.stroke();
}

// ---- the session ------------------------------------------------------------

function bits(s) { return Uint8Array.from(s, (ch) => ch === '1' ? 1 : 0); }
function bitString(m) { return Array.from(m, (v) => v ? '1' : '0').join(''); }

async function newSession(body, ctype) {
  setStatus('loading the image...');
  try {
    const q = $('drop-alpha').checked ? '?drop_alpha=1' : '';
    const s = await api('POST', '/sessions' + q, body, ctype);
    if (st.session) api('DELETE', '/sessions/' + st.session).catch(() => {});
    st.session = s.session;
    st.mask = bits(s.mask);
    st.labels = s.has_labels;
    st.rank = 0;
    st.dirMask = null;
    st.reconData = st.editData = null;
    st.hasTransfer = false;
    baseImage = await loadImage(s.image);
    $('image-source').textContent = 'image: ' + s.source;
    const sel = $('part');
    sel.innerHTML = '';
    for (const p of s.parts || []) {
      const o = document.createElement('option');
      o.value = o.textContent = p;
      if (p === 'mouth') o.selected = true;
      sel.appendChild(o);
    }
    $('part-row').hidden = !s.has_labels;
    drawMaskView();
    await show('view-original', s.image);
    for (const id of ['view-recon', 'view-edit', 'view-diff', 'view-t-original', 'view-t-recon', 'view-t-edit']) show(id, null);
    buildSliders([]);
    setDownloads(false);
    setStatus('');
  } catch (e) { setStatus(e.message, true); }
}

// ---- mask painting ------------------------------------------------------------

function tool() { return document.querySelector('input[name=tool]:checked').value; }
function cellAt(ev) {
  const c = $('mask-canvas'), r = c.getBoundingClientRect();
  return [Math.floor((ev.clientX - r.left) / r.width * st.W), Math.floor((ev.clientY - r.top) / r.height * st.H)];
}
function paint(x, y, v) {
  const s = +$('brush-size').value;
  for (let dy = -s; dy <= s; dy++)
    for (let dx = -s; dx <= s; dx++) {
      const xx = x + dx, yy = y + dy;
      if (xx >= 0 && yy >= 0 && xx < st.W && yy < st.H && dx * dx + dy * dy <= s * s + s) st.mask[yy * st.W + xx] = v;
    }
}
function shapeTest(kind, a, b) {
  const x0 = Math.min(a[0], b[0]), x1 = Math.max(a[0], b[0]), y0 = Math.min(a[1], b[1]), y1 = Math.max(a[1], b[1]);
  if (kind === 'rect') return (x, y) => x >= x0 && x <= x1 && y >= y0 && y <= y1;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, rx = (x1 - x0) / 2 + 0.5, ry = (y1 - y0) / 2 + 0.5;
  return (x, y) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;
}
let drag = null;
function onDown(ev) {
  if (!st.mask) return;
  ev.preventDefault();
  $('mask-canvas').setPointerCapture(ev.pointerId);
  const p = cellAt(ev), t = tool();
  drag = { t, start: p };
  if (t === 'brush' || t === 'eraser') { paint(p[0], p[1], t === 'brush' ? 1 : 0); drawMaskView(); }
}
function onMove(ev) {
  if (!drag) return;
  const p = cellAt(ev);
  if (drag.t === 'brush' || drag.t === 'eraser') { paint(p[0], p[1], drag.t === 'brush' ? 1 : 0); drawMaskView(); }
  else { const f = shapeTest(drag.t, drag.start, p); drawMaskView((x, y, m) => m || f(x, y)); }
}
function onUp(ev) {
  if (!drag) return;
  if (drag.t === 'rect' || drag.t === 'ellipse') {
    const f = shapeTest(drag.t, drag.start, cellAt(ev));
    for (let y = 0; y < st.H; y++) for (let x = 0; x < st.W; x++) if (f(x, y)) st.mask[y * st.W + x] = 1;
  }
  drag = null;
  drawMaskView();
}

async function fillPart() {
  try {
    const r = await api('PUT', `/sessions/${st.session}/mask`, { part: $('part').value, dilate: +$('part-dilate').value });
    st.mask = bits(r.mask);
    drawMaskView();
  } catch (e) { setStatus(e.message, true); }
}

// ---- find directions ---------------------------------------------------------

const PHASES = { inversion: 'inversion', sampling: 'back down to t_edit', roi: 'directions in the region',
  null: 'null space outside', constrained: 'constrained directions', reconstruction: 'reconstruction' };

function showProgress(j) {
  const bar = $('progress');
  bar.max = j.total || 1;
  bar.value = j.state === 'done' ? bar.max : j.done;
  let t = `${j.state}: ${PHASES[j.phase] || j.phase || 'waiting'} ${j.done}/${j.total}`;
  if (j.sin_angle !== null && (j.phase === 'roi' || j.phase === 'null')) t += `, subspace angle sin = ${j.sin_angle.toExponential(2)}`;
  t += ` (${j.seconds.toFixed(1)} s)`;
  if (j.error) t += ' - ' + j.error;
  $('progress-text').textContent = t;
}

function settings() {
  const o = {};
  for (const k of ['t_edit', 'rank', 'null_rank', 'min_iter', 'max_iter', 'steps', 'seed']) o[k] = +$('s-' + k).value;
  return o;
}

function watchJob(id) {
  return new Promise((resolve) => {
    const es = new EventSource(`/api/jobs/${id}/events?token=${TOKEN}`);
    let last = null;
    es.onmessage = (ev) => {
      last = JSON.parse(ev.data);
      showProgress(last);
      if (last.state !== 'queued' && last.state !== 'running') { es.close(); resolve(last); }
    };
    es.onerror = async () => { // the stream broke: ask once
      es.close();
      try { last = await api('GET', '/jobs/' + id); } catch (e) { /* keep last */ }
      if (last && (last.state === 'queued' || last.state === 'running')) resolve(await pollJob(id));
      else resolve(last);
    };
  });
}
async function pollJob(id) {
  for (;;) {
    const j = await api('GET', '/jobs/' + id);
    showProgress(j);
    if (j.state !== 'queued' && j.state !== 'running') return j;
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function findDirections() {
  if (!st.session) return;
  const body = settings();
  body.mask = bitString(st.mask);
  try {
    const j = await api('POST', `/sessions/${st.session}/directions`, body);
    st.job = j.job;
    $('btn-find').disabled = true;
    $('btn-cancel').disabled = false;
    setStatus('finding directions...');
    const end = await watchJob(j.job);
    st.job = null;
    $('btn-find').disabled = false;
    $('btn-cancel').disabled = true;
    if (end.state !== 'done') { setStatus(end.state === 'cancelled' ? 'cancelled' : end.error, end.state !== 'cancelled'); return; }
    const s = await api('GET', '/sessions/' + st.session);
    st.rank = s.directions.rank;
    st.dirMask = bits(s.directions.mask);
    st.hasTransfer = false; // new directions drop the transfer
    for (const id of ['view-t-original', 'view-t-recon', 'view-t-edit']) show(id, null);
    st.reconData = await show('view-recon', s.reconstruction);
    st.editData = await show('view-edit', s.reconstruction);
    drawDiff();
    buildSliders(s.directions.singular_values);
    setDownloads(true);
    $('btn-transfer-face').disabled = false;
    $('t-upload').disabled = false;
    setStatus(`found ${st.rank} directions in ${s.directions.seconds.toFixed(1)} s`);
  } catch (e) {
    $('btn-find').disabled = false;
    $('btn-cancel').disabled = true;
    setStatus(e.message, true);
  }
}

async function cancelJob() {
  const id = st.job;
  if (!id) return;
  try {
    const j = await api('POST', `/jobs/${id}/cancel`);
    // the job's own stream may have ended it first: a late reply must not
    // paint a stale "running" over "cancelled"
    if (st.job === id) showProgress(j);
  } catch (e) { setStatus(e.message, true); }
}

// ---- sliders and rendering ----------------------------------------------------
//
// While a slider is dragged the page asks for previews (the same start x_t +
// sum s_i v_i denoised on a few points of the schedule, "preview": true), one
// at a time, always for the newest strengths. On release it asks for the
// preview of the final strengths at once (a newer render makes the server
// cancel an older one still running: {"superseded": true}) and then for the exact
// render (every step of the schedule: the image `loco edit` makes), unless
// the preview already was exact (short schedules).

const R = { gen: 0, released: 0, busy: false, shownKey: null, shownGen: 0, t0: 0, flight: null };

function buildSliders(sv) {
  const box = $('sliders');
  box.innerHTML = '';
  st.strengths = sv.map(() => 0);
  R.shownKey = null;
  $('render-time').textContent = '';
  $('view-edit').parentElement.querySelector('figcaption').textContent = 'edit';
  sv.forEach((s, i) => {
    const row = document.createElement('div');
    row.className = 'slider';
    row.innerHTML = `<label for="slider-${i}">dir ${i} <small>(&sigma; ${s.toFixed(2)})</small></label>` +
      `<input id="slider-${i}" type="range" min="-10" max="10" step="0.5" value="0">` +
      `<output id="slider-${i}-v">0</output>`;
    box.appendChild(row);
    const inp = row.querySelector('input');
    inp.addEventListener('input', () => {
      $(`slider-${i}-v`).textContent = inp.value;
      st.strengths[i] = +inp.value;
      R.gen++;
      document.body.dataset.exact = '0';
      dragPreviews();
    });
    inp.addEventListener('change', () => { st.strengths[i] = +inp.value; released(); });
  });
  $('btn-reset').disabled = sv.length === 0;
}

// one render request; null when a newer one superseded it (the server
// answers {"superseded": true} then)
async function renderReq(strengths, preview, target) {
  const r = await api('POST', `/sessions/${st.session}/render`, { strengths, preview, target: target || 'image' });
  return r.superseded ? null : r;
}

// a preview of strengths (the one in flight when it is for the same ones)
function preview(strengths) {
  const key = strengths.join(',');
  if (R.flight && R.flight.key === key) return R.flight.p;
  const p = renderReq(strengths, true);
  R.flight = { key, p };
  p.finally(() => { if (R.flight && R.flight.p === p) R.flight = null; }).catch(() => {});
  return p;
}

async function showEdit(r, gen, key, exact) {
  if (!r || gen < R.shownGen) return false; // something newer is shown
  R.shownGen = gen;
  R.shownKey = exact ? null : key;
  st.editData = await show('view-edit', r.image);
  drawDiff();
  $('view-edit').parentElement.querySelector('figcaption').textContent = exact ? 'edit' : 'edit (preview)';
  return true;
}

async function dragPreviews() {
  if (R.busy) return; // the running loop picks the newest strengths up
  R.busy = true;
  try {
    while (R.released !== R.gen) {
      const gen = R.gen, strengths = st.strengths.slice(), key = strengths.join(',');
      if (key !== R.shownKey) {
        const r = await preview(strengths);
        if (R.released !== R.gen) await showEdit(r, gen, key, r && r.exact);
      }
      if (R.gen === gen) break;
    }
  } catch (e) { setStatus(e.message, true); }
  R.busy = false;
}

async function released() {
  const gen = ++R.gen, t0 = performance.now(), strengths = st.strengths.slice(), key = strengths.join(',');
  R.released = gen;
  document.body.dataset.exact = '0';
  try {
    let previewMs = null, r = null;
    if (key !== R.shownKey) {
      r = await preview(strengths);
      if (gen !== R.gen) return;
      await showEdit(r, gen, key, r && r.exact);
      previewMs = performance.now() - t0;
      if (r && !r.exact) $('render-time').textContent = `preview (${r.steps} steps) ${previewMs.toFixed(0)} ms after release; the exact image follows`;
    }
    if (!r || !r.exact) {
      r = await renderReq(strengths, false);
      if (!r || gen !== R.gen) return;
      await showEdit(r, gen, key, true);
    }
    if (st.hasTransfer) {
      const t = await renderReq(strengths, false, 'transfer');
      if (t && gen === R.gen) await show('view-t-edit', t.image);
    }
    if (gen !== R.gen) return;
    const ms = performance.now() - t0;
    $('render-time').textContent = (previewMs !== null && previewMs < ms - 1 ? `preview ${previewMs.toFixed(0)} ms, ` : '') +
      `exact image ${ms.toFixed(0)} ms after release (${r.steps} steps, denoising ${(r.seconds * 1000).toFixed(0)} ms)`;
    document.body.dataset.previewMs = previewMs === null ? '' : previewMs.toFixed(0);
    document.body.dataset.exactMs = ms.toFixed(0);
    document.body.dataset.renders = String((+document.body.dataset.renders || 0) + 1);
    document.body.dataset.exact = '1';
  } catch (e) { setStatus(e.message, true); }
}

// ---- transfer and downloads ------------------------------------------------------

async function transfer(body, ctype) {
  try {
    const q = $('drop-alpha').checked ? '?drop_alpha=1' : '';
    const j = await api('POST', `/sessions/${st.session}/transfer${q}`, body, ctype);
    setStatus('transferring...');
    const end = await watchJob(j.job);
    if (end.state !== 'done') { setStatus(end.error || end.state, true); return; }
    const s = await api('GET', '/sessions/' + st.session);
    st.hasTransfer = true;
    await show('view-t-original', s.transfer_image);
    await show('view-t-recon', s.transfer_reconstruction);
    const t = await api('POST', `/sessions/${st.session}/render`, { strengths: st.strengths, target: 'transfer' });
    await show('view-t-edit', t.image);
    setStatus('transferred');
  } catch (e) { setStatus(e.message, true); }
}

function setDownloads(on) {
  const f = (id, name) => {
    const a = $(id);
    a.href = on ? `/api/sessions/${st.session}/files/${name}?token=${TOKEN}` : '#';
    a.setAttribute('aria-disabled', on ? 'false' : 'true');
  };
  f('dl-edit', 'edit.png');
  f('dl-strip', 'strip.png');
  f('dl-dirs', 'directions.safetensors');
  f('dl-report', 'report.json');
}

// ---- start -----------------------------------------------------------------------

async function start() {
  try {
    const info = await api('GET', '/info');
    st.info = info;
    st.H = info.height;
    st.W = info.width;
    $('model-info').textContent = `${info.model} (${info.family}, ${info.channels}x${info.height}x${info.width})`;
    for (const [k, v] of Object.entries(info.defaults)) if ($('s-' + k)) $('s-' + k).value = +v.toFixed(4);
    if (!info.faces) { $('btn-face').disabled = true; $('btn-transfer-face').hidden = true; }
    setDownloads(false);
    if (info.faces) await newSession({ source: 'face', seed: 0, index: 0 });
    else await newSession({ source: 'sample', seed: 0 });
  } catch (e) { setStatus(e.message, true); }
}

$('btn-face').onclick = () => newSession({ source: 'face', seed: +$('face-seed').value, index: +$('face-index').value });
$('btn-sample').onclick = () => newSession({ source: 'sample', seed: +$('sample-seed').value });
$('upload').onchange = (ev) => { if (ev.target.files[0]) newSession(ev.target.files[0], 'image/png'); };
$('btn-clear').onclick = () => { if (st.mask) { st.mask.fill(0); drawMaskView(); } };
$('btn-invert').onclick = () => { if (st.mask) { st.mask = st.mask.map((v) => 1 - v); drawMaskView(); } };
$('btn-part').onclick = fillPart;
$('brush-size').oninput = () => { $('brush-size-v').textContent = $('brush-size').value; };
$('btn-find').onclick = findDirections;
$('btn-cancel').onclick = cancelJob;
$('btn-reset').onclick = () => {
  document.querySelectorAll('#sliders input').forEach((s, i) => { s.value = 0; $(`slider-${i}-v`).textContent = '0'; });
  st.strengths = st.strengths.map(() => 0);
  released();
};
$('btn-transfer-face').onclick = () => transfer({ source: 'face', seed: +$('t-face-seed').value, index: +$('t-face-index').value });
$('t-upload').onchange = (ev) => { if (ev.target.files[0]) transfer(ev.target.files[0], 'image/png'); };
const mc = $('mask-canvas');
mc.addEventListener('pointerdown', onDown);
mc.addEventListener('pointermove', onMove);
mc.addEventListener('pointerup', onUp);
mc.addEventListener('pointercancel', onUp);
start();
