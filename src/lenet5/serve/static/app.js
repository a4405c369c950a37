// Draw-a-digit page: pointer strokes on a canvas, sent as a PNG to /api/predict (the same
// load_image + preprocess path as `lenet5 predict`), the answer drawn back: label, a bar per
// class, the 28x28 input as the model saw it, and the C1 / C3 feature maps.
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
      if (res.ok) show(data);
      else showError(data.error || `error ${res.status}`);
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
  function show(d) {
    out.textContent = String(d.label);
    out.dataset.label = String(d.label);
    const p = d.probs[d.label];
    confidence.textContent = `${(100 * p).toFixed(1)}% sure (${d.model}, ${d.latency_ms.toFixed(1)} ms)`;
    status.textContent = "";
    d.probs.forEach((q, i) => setBar(i, q, i === d.label));
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
    document.body.dataset.state = "error";
  }

  function reset() {
    out.textContent = "–";
    out.dataset.label = "";
    confidence.textContent = "Draw a digit to start.";
    status.textContent = "";
    bars.forEach((_, i) => setBar(i, 0, false));
    const c = $("input28").getContext("2d");
    c.fillStyle = "#000";
    c.fillRect(0, 0, 28, 28);
    $("c1").replaceChildren();
    $("c3").replaceChildren();
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

  function setBar(i, p, top) {
    const li = bars[i];
    const pct = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".fill").style.width = pct;
    li.querySelector(".pct").textContent = pct;
    li.classList.toggle("top", top);
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
    const canvases = [];
    for (let i = 0; i < n; i++) {
      const c = box.children[i] || document.createElement("canvas");
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
        const arch = m.architecture && m.architecture !== m.name ? ` (${m.architecture})` : "";
        const opt = new Option(`${m.name}${arch}`, m.name);
        opt.selected = m.default;
        modelSel.append(opt);
      }
    } catch (err) {
      status.textContent = `could not list the models (${err.message})`;
    }
  }

  makeBars();
  paint();
  reset();
  loadModels();
})();
