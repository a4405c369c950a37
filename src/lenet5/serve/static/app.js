// Draw-a-digit page: pointer strokes on a canvas, sent as a PNG to /api/predict (the same
// load_image + preprocess path as `lenet5 predict`), the answer drawn back: label, a bar per
// class, the 28x28 input as the model saw it, and the C1 / C3 feature maps. The transform
// panel turns, moves, scales, thins or thickens and adds noise to the 28x28 digit the server
// made from the drawing, and asks again with those pixels: the answer and maps follow live.
// A model with a reject option may answer "no digit" or "unsure" (label null, a reason).
"use strict";

(() => {
  const STROKE_PX = 18; // on the 280-px pad: about 2 px once preprocessing fits the digit in 20 px
  const DEBOUNCE_MS = 150; // while drawing; lifting the pen asks at once
  const SEND_PX = 112; // the size of the PNG sent to the server

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const undoBtn = $("undo");
  const clearBtn = $("clear");
  const modelSel = $("model");
  const out = $("prediction");
  const confidence = $("confidence");
  const status = $("status");
  const bars = [];

  let strokes = []; // each a list of [x, y] in pad pixels
  let active = null; // {id, points} while a pointer is down
  let timer = null;
  let seq = 0; // the latest request; older answers are dropped
  let base = null; // the drawing as the server preprocessed it: {shape, values} 28x28

  // ---- drawing -------------------------------------------------------------------------
  function paint() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = ctx.fillStyle = "#000";
    ctx.lineWidth = STROKE_PX;
    ctx.lineCap = ctx.lineJoin = "round";
    for (const pts of strokes) {
      if (pts.length === 1) {
        ctx.beginPath();
        ctx.arc(pts[0][0], pts[0][1], STROKE_PX / 2, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(pts[0][0], pts[0][1]);
      for (const [x, y] of pts.slice(1)) ctx.lineTo(x, y);
      ctx.stroke();
    }
  }

  function padPoint(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
  }

  pad.addEventListener("pointerdown", (e) => {
    if (active || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    active = { id: e.pointerId, points: [padPoint(e)] };
    strokes.push(active.points);
    paint();
    changed(DEBOUNCE_MS);
  });

  pad.addEventListener("pointermove", (e) => {
    if (!active || e.pointerId !== active.id) return;
    const events = (e.getCoalescedEvents && e.getCoalescedEvents()) || [];
    for (const ev of events.length ? events : [e]) active.points.push(padPoint(ev));
    paint();
    changed(DEBOUNCE_MS);
  });

  function endStroke(e) {
    if (!active || e.pointerId !== active.id) return;
    active = null;
    changed(0);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  pad.addEventListener("lostpointercapture", endStroke);

  function undo() {
    if (active || !strokes.length) return;
    strokes.pop();
    paint();
    changed(0);
  }

  function clear() {
    active = null;
    strokes = [];
    paint();
    changed(0);
  }

  undoBtn.addEventListener("click", undo);
  clearBtn.addEventListener("click", clear);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === "z") {
      e.preventDefault();
      undo();
    } else if (e.key === "Escape") {
      clear();
    }
  });
  modelSel.addEventListener("change", () => changed(0));

  // ---- the transform panel -------------------------------------------------------------
  const T = {
    rotate: ["t-rotate", (v) => `${v}°`], dx: ["t-dx", (v) => `${v} px`],
    dy: ["t-dy", (v) => `${v} px`], scale: ["t-scale", (v) => `${v}%`],
    stroke: ["t-stroke", (v) => (v > 0 ? `+${v}` : `${v}`)], noise: ["t-noise", (v) => `${v}`],
  };
  function settings() {
    const out = {};
    for (const [k, [id, fmt]] of Object.entries(T)) {
      out[k] = Number($(id).value);
      $(`${id}-v`).textContent = fmt(out[k]);
    }
    return out;
  }
  function identity(t) {
    return !t.rotate && !t.dx && !t.dy && t.scale === 100 && !t.stroke && !t.noise;
  }
  for (const [id] of Object.values(T)) {
    $(id).addEventListener("input", () => {
      settings();
      if (base && strokes.length) {
        document.body.dataset.state = "pending";
        clearTimeout(timer);
        timer = setTimeout(predictPixels, 40);
      }
    });
  }
  $("t-reset").addEventListener("click", () => {
    for (const [id] of Object.values(T)) $(id).value = $(id).defaultValue;
    $(T.rotate[0]).dispatchEvent(new Event("input"));
  });

  // The digit (28x28, ink 1) warped about its centre (bilinear; background 0 outside): turned
  // counter-clockwise by `rotate` degrees, scaled, shifted; then strokes grown or eroded by
  // 3x3 grey steps, then Gaussian noise of std `noise` (one fixed draw, so it does not flicker).
  // The same corruptions as lenet5.data.corruptions.
  const N = 28, C = 13.5;
  const NOISE = (() => {
    let x = 12345;
    const u = () => ((x = (x * 1103515245 + 12345) % 2147483648) + 1) / 2147483649;
    return Float32Array.from({ length: N * N }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
  })();
  function transformed(a, t) {
    const src = a.values, out = new Float32Array(N * N);
    const th = (t.rotate * Math.PI) / 180, s = t.scale / 100, cos = Math.cos(th), sin = Math.sin(th);
    const at = (x, y) => (x < 0 || y < 0 || x >= N || y >= N ? 0 : src[y * N + x]);
    for (let y = 0; y < N; y++) {
      for (let x = 0; x < N; x++) {
        const dx = x - C - t.dx, dy = y - C - t.dy;
        const xi = (cos * dx - sin * dy) / s + C, yi = (sin * dx + cos * dy) / s + C;
        const x0 = Math.floor(xi), y0 = Math.floor(yi), fx = xi - x0, fy = yi - y0;
        out[y * N + x] = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) +
          fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
      }
    }
    let v = out;
    for (let left = Math.abs(t.stroke); left > 1e-9; left -= 1) {
      const step = Math.min(1, left), grow = t.stroke > 0, next = new Float32Array(N * N);
      for (let y = 0; y < N; y++) {
        for (let x = 0; x < N; x++) {
          let m = v[y * N + x];
          for (let j = -1; j <= 1; j++) {
            for (let i = -1; i <= 1; i++) {
              const q = x + i < 0 || y + j < 0 || x + i >= N || y + j >= N ? 0 : v[(y + j) * N + x + i];
              m = grow ? Math.max(m, q) : Math.min(m, q);
            }
          }
          next[y * N + x] = v[y * N + x] + step * (m - v[y * N + x]);
        }
      }
      v = next;
    }
    return Array.from({ length: N }, (_, y) => Array.from({ length: N }, (_, x) =>
      Math.min(1, Math.max(0, v[y * N + x] + t.noise * NOISE[y * N + x]))));
  }

  async function predictPixels() {
    timer = null;
    const mine = ++seq;
    const settled = () => mine === seq && timer === null;
    try {
      const query = new URLSearchParams({ features: "1", encoding: "uint8", top_k: "3" });
      const body = { pixels: transformed(base, settings()), preprocess: false };
      if (modelSel.value) body.model = modelSel.value;
      const res = await fetch(`/api/predict?${query}`, {
        method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" },
      });
      const data = await res.json();
      if (!settled()) return;
      if (res.ok) show(data);
      else showError(data.error || `error ${res.status}`);
    } catch (err) {
      if (settled()) showError(`no answer from the server (${err.message})`);
    }
  }

  // ---- asking the server ---------------------------------------------------------------
  // body[data-state]: idle (nothing drawn), pending (an answer is due), done, error.
  function changed(delay) {
    undoBtn.disabled = clearBtn.disabled = strokes.length === 0;
    clearTimeout(timer);
    timer = null;
    if (!strokes.length) {
      seq++; // anything in flight is now stale
      reset();
      return;
    }
    document.body.dataset.state = "pending";
    timer = setTimeout(predict, delay);
  }

  async function predict() {
    timer = null;
    const mine = ++seq;
    const settled = () => mine === seq && timer === null;
    try {
      const form = new FormData();
      form.append("image", padPng(), "digit.png");
      const query = new URLSearchParams({ features: "1", encoding: "uint8", top_k: "3" });
      if (modelSel.value) query.set("model", modelSel.value);
      const res = await fetch(`/api/predict?${query}`, { method: "POST", body: form });
      const data = await res.json();
      if (!settled()) return;
      if (!res.ok) {
        base = null;
        showError(data.error || `error ${res.status}`);
      } else {
        base = decode(data.input);
        if (identity(settings())) show(data);
        else predictPixels();
      }
    } catch (err) {
      if (settled()) showError(`no answer from the server (${err.message})`);
    }
  }

  // The pad as a PNG file, at 112x112: still four times the 28x28 the digit ends up in, and a
  // sixth of the pixels for the server to preprocess. toDataURL encodes at once; Chromium's
  // toBlob may wait up to a second for an idle period before encoding.
  const small = document.createElement("canvas");
  small.width = small.height = SEND_PX;
  function padPng() {
    const c = small.getContext("2d");
    c.imageSmoothingQuality = "high";
    c.drawImage(pad, 0, 0, SEND_PX, SEND_PX);
    const bytes = atob(small.toDataURL("image/png").split(",", 2)[1]);
    const buf = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) buf[i] = bytes.charCodeAt(i);
    return new Blob([buf], { type: "image/png" });
  }

  // ---- showing the answer --------------------------------------------------------------
  // Probabilities over the ten digits (digit_probs); the 1998 model's rubbish mass apart.
  function show(d) {
    const digits = d.digit_probs || d.probs;
    const refused = d.label === null;
    out.classList.toggle("refused", refused);
    out.textContent = refused ? d.verdict : String(d.label);
    out.dataset.label = refused ? "" : String(d.label);
    out.dataset.verdict = refused ? d.verdict : "";
    const rubbish = d.rubbish == null ? "" : `; rubbish class ${(100 * d.rubbish).toFixed(0)}%`;
    const who = `(${d.model}, ${d.latency_ms.toFixed(1)} ms)`;
    confidence.textContent = refused
      ? `${d.reason} ${who}`
      : `${(100 * digits[d.label]).toFixed(1)}% sure among the ten digits${rubbish} ${who}`;
    status.textContent = "";
    digits.forEach((q, i) => setBar(i, q, !refused && i === d.label, refused && i === d.guess));
    drawGray($("input28"), decode(d.input), 0, 1);
    drawMaps($("c1"), d.features.C1);
    drawMaps($("c3"), d.features.C3);
    document.body.dataset.state = "done";
  }

  function showError(message) {
    out.textContent = "?";
    out.dataset.label = "";
    confidence.textContent = "";
    status.textContent = message;
    bars.forEach((_, i) => setBar(i, 0, false));
    out.classList.remove("refused");
    document.body.dataset.state = "error";
  }

  // How many maps the chosen model has per layer (from /api/models; LeNet-5's 6 and 16 until
  // the list arrives), and a grid of at most 8 a row that leaves no row part empty for them.
  let modelMaps = {};
  function mapCounts() {
    const m = modelMaps[modelSel.value] || {};
    return { C1: m.C1 || 6, C3: m.C3 || 16 };
  }
  function layout(box, n, layer, size) {
    box.style.gridTemplateColumns = `repeat(${n <= 8 ? n : 8}, 1fr)`;
    box.setAttribute("aria-label", `${layer} feature maps: ${n} maps of ${size} by ${size}`);
    const caption = box.parentElement.querySelector("figcaption");
    if (caption) caption.textContent = `${layer}: ${n} feature maps, ${size}\u00d7${size}`;
  }

  // Light tiles where the maps will be: the idle page has no black squares or empty rows.
  function placeholders(box, n) {
    layout(box, n, box.id.toUpperCase(), box.id === "c1" ? 28 : 10);
    box.replaceChildren(...Array.from({ length: n }, () => {
      const tile = document.createElement("span");
      tile.className = "placeholder";
      return tile;
    }));
  }

  function reset() {
    base = null;
    out.textContent = "–";
    out.dataset.label = "";
    out.classList.remove("refused");
    confidence.textContent = "Draw a digit to start.";
    status.textContent = "";
    bars.forEach((_, i) => setBar(i, 0, false));
    const c = $("input28").getContext("2d");
    c.fillStyle = "#dde3ee";
    c.fillRect(0, 0, 28, 28);
    const counts = mapCounts();
    placeholders($("c1"), counts.C1);
    placeholders($("c3"), counts.C3);
    document.body.dataset.state = "idle";
  }

  function makeBars() {
    const list = $("bars");
    for (let i = 0; i < 10; i++) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="digit">${i}</span><span class="track" aria-hidden="true">` +
        `<span class="fill"></span></span><span class="pct">0%</span>`;
      list.append(li);
      bars.push(li);
    }
  }

  function setBar(i, p, top, guess = false) {
    const li = bars[i];
    const pct = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".fill").style.width = pct;
    li.querySelector(".pct").textContent = pct;
    li.classList.toggle("top", top);
    li.classList.toggle("guess", guess);
    li.setAttribute("aria-label", `${i}: ${pct}`);
  }

  // An array sent with encoding=uint8: {shape, lo, hi, data}, data the row-major bytes in
  // base64, each value lo + (hi - lo) * byte / 255. Returns {shape, values: Float32Array}.
  function decode(enc) {
    const bytes = atob(enc.data);
    const values = new Float32Array(bytes.length);
    const step = (enc.hi - enc.lo) / 255;
    for (let i = 0; i < bytes.length; i++) values[i] = enc.lo + step * bytes.charCodeAt(i);
    return { shape: enc.shape, values };
  }

  // A (h, w) array ({shape, values}, row-major) as gray levels, lo -> black and hi -> white.
  function drawGray(canvas, a, lo, hi, offset = 0) {
    const [h, w] = a.shape.slice(-2);
    canvas.width = w;
    canvas.height = h;
    const c = canvas.getContext("2d");
    const img = c.createImageData(w, h);
    const span = hi - lo || 1;
    for (let i = 0; i < w * h; i++) {
      const v = Math.round(255 * Math.min(1, Math.max(0, (a.values[offset + i] - lo) / span)));
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    c.putImageData(img, 0, 0);
  }

  // One layer's maps (n, h, w) on the layer's own scale, so a weak map looks weak.
  function drawMaps(box, enc) {
    const a = decode(enc);
    const [n, h, w] = a.shape;
    layout(box, n, box.id.toUpperCase(), h);
    const canvases = [];
    for (let i = 0; i < n; i++) {
      const old = box.children[i];
      const c = old && old.tagName === "CANVAS" ? old : document.createElement("canvas");
      c.className = "pixelated";
      drawGray(c, a, enc.lo, enc.hi, i * h * w);
      canvases.push(c);
    }
    box.replaceChildren(...canvases);
  }

  async function loadModels() {
    try {
      const res = await fetch("/api/models");
      const models = await res.json();
      for (const m of models) {
        modelMaps[m.name] = m.maps || {};
        const arch = m.architecture && m.architecture !== m.name ? ` (${m.architecture})` : "";
        const opt = new Option(`${m.name}${arch}`, m.name);
        opt.selected = m.default;
        modelSel.append(opt);
      }
      if (document.body.dataset.state === "idle") reset(); // the chosen model's map counts
    } catch (err) {
      status.textContent = `could not list the models (${err.message})`;
    }
  }

  makeBars();
  settings();
  paint();
  reset();
  loadModels();
})();
