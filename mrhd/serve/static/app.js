// The mrhd serve page: pick a video, send queries, show moments, curve and thumbnails linked to the
// player. Everything this tab shows lives in this closure, so tabs never see each other's results.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const CLIP = 2;                 // seconds per saliency score
  const SHADED = 5;               // moments shaded on the curve
  const W = 1000, H = 190, X0 = 46, X1 = 974, Y0 = 10, Y1 = 160;   // chart geometry (viewBox units)

  const player = $("player");
  let info = null;
  let current = null;             // the chosen video {id, name, duration, url}
  let activeJob = null;           // the job this tab shows or waits for
  let cards = [];                 // rendered results: {playhead, moments: [{el, shade, start, end}]}

  // ---- small helpers ------------------------------------------------------------------
  function roundHalfEven(x) {     // Python's round(), so times read as in `mrhd predict`
    const f = Math.floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }
  function fmtTime(seconds) {     // m:ss, h:mm:ss from an hour on (mrhd.inference.results.fmt_time)
    const s = roundHalfEven(Math.max(seconds, 0));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function api(method, url, body) {
    let resp;
    const init = { method, cache: "no-store" };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers = { "Content-Type": "application/json" }; }
    try { resp = await fetch(url, init); } catch (e) {
      throw new Error("cannot reach the server; is mrhd serve still running?");
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) throw new Error((data && data.error) || `the server answered ${resp.status}`);
    return data;
  }

  function showError(message) { $("error").textContent = message; $("error").hidden = false; }
  function hideError() { $("error").hidden = true; $("error").textContent = ""; }
  function setBar(bar, fraction) { bar.firstElementChild.style.width = `${Math.round(Math.min(Math.max(fraction, 0), 1) * 100)}%`; }
  function setStatus(text, fraction) {
    $("status").hidden = !text;
    $("status-text").textContent = text || "";
    $("job-progress").hidden = fraction === null || fraction === undefined;
    if (fraction !== null && fraction !== undefined) setBar($("job-progress"), fraction);
  }

  // ---- the video ----------------------------------------------------------------------
  function clearResults() {
    activeJob = null;
    cards = [];
    $("results").replaceChildren();
    $("results-head").hidden = true;
    $("notes").hidden = true;
    setStatus(null);
  }

  function selectVideo(video) {
    current = video;
    clearResults();
    hideError();
    $("player-note").hidden = true;
    player.src = video.url;
    const length = video.duration ? ` · ${fmtTime(video.duration)}` : "";
    $("video-name").textContent = `${video.name}${length}`;
  }

  function upload(file) {
    hideError();
    if (info && file.size > info.max_upload_mb * 1024 * 1024) {
      showError(`${file.name} is larger than this server's upload limit of ${info.max_upload_mb} MB; ` +
                "trim the video or start mrhd serve with a larger --max-upload-mb");
      return;
    }
    const bar = $("upload-progress");
    bar.hidden = false;
    setBar(bar, 0);
    $("video-name").textContent = `uploading ${file.name}…`;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/videos?name=" + encodeURIComponent(file.name));
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) setBar(bar, e.loaded / e.total); };
    xhr.onload = () => {
      bar.hidden = true;
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 201 && data) { selectVideo(data); return; }
      $("video-name").textContent = current ? current.name : "no video yet";
      showError((data && data.error) || `upload failed (the server answered ${xhr.status})`);
    };
    xhr.onerror = () => {
      bar.hidden = true;
      $("video-name").textContent = current ? current.name : "no video yet";
      showError("upload failed: cannot reach the server; is mrhd serve still running?");
    };
    xhr.send(file);
  }

  $("file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";          // the same file again fires change again
    if (file) upload(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });

  $("folder-select").addEventListener("change", async (e) => {
    const id = e.target.value;
    if (!id) return;
    hideError();
    try { selectVideo(await api("GET", `/api/videos/${id}`)); } catch (err) { showError(err.message); }
  });

  player.addEventListener("error", () => {
    if (!current) return;
    $("player-note").textContent = `This browser cannot play ${current.name}; the moments, curve and ` +
      "thumbnails below are still right (an mp4 with H.264 plays everywhere).";
    $("player-note").hidden = false;
  });

  // ---- queries and jobs ---------------------------------------------------------------
  async function submit() {
    hideError();
    if (!current) { showError("choose a video first: upload one or pick one from the server's folder"); return; }
    const text = $("queries").value;
    const lines = text.split("\n").map((s) => s.trim()).filter((s) => s.length);
    clearResults();
    $("submit").disabled = true;
    try {
      const job = await api("POST", "/api/jobs", { video: current.id, queries: lines.length ? lines : [text] });
      activeJob = job.id;
      await follow(job);
    } catch (err) {
      setStatus(null);
      showError(err.message);
    } finally {
      $("submit").disabled = false;
    }
  }

  async function follow(job) {
    while (job.id === activeJob) {
      const p = job.progress;
      setStatus(job.message, job.state === "extracting" && p ? p.done / p.total : null);
      if (job.state === "done") { setStatus(null); render(job); return; }
      if (job.state === "error") { setStatus(null); showError(job.error); return; }
      await sleep(job.state === "predicting" ? 60 : 250);
      if (job.id !== activeJob) return;
      job = await api("GET", `/api/jobs/${job.id}`);
    }
  }

  $("submit").addEventListener("click", submit);
  $("queries").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
  });

  // ---- results ------------------------------------------------------------------------
  function seek(t, play) {
    player.currentTime = Math.max(0, t);
    if (play) player.play().catch(() => { /* the browser may refuse autoplay; the position is set */ });
    updatePlayhead();
  }

  function uniqueMoments(windows) {       // rounded official lines may repeat a window: show it once
    const seen = new Set(), out = [];
    for (const [st, ed, score] of windows) {
      const key = `${st}-${ed}`;
      if (!seen.has(key)) { seen.add(key); out.push([st, ed, score]); }
    }
    return out;
  }

  function tickStep(duration) {           // mrhd.inference.plots._tick_step
    for (const step of [2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600]) if (duration / step <= 12) return step;
    return 7200;
  }

  function drawChart(pred, moments, duration) {
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": `saliency of "${pred.query}" over time`,
      "data-x0": X0, "data-x1": X1, "data-duration": duration });
    const x = (t) => X0 + (Math.min(Math.max(t, 0), duration) / duration) * (X1 - X0);
    const sal = pred.pred_saliency_scores;
    const lo = Math.min(...sal), hi = Math.max(...sal);
    const y = (s) => Y1 - (hi > lo ? (s - lo) / (hi - lo) : 0.5) * (Y1 - Y0);
    svg("rect", { class: "frame", x: X0, y: Y0, width: X1 - X0, height: Y1 - Y0 }, chart);
    const step = tickStep(duration);
    for (let t = 0; t <= duration + 1e-9; t += step) {
      svg("line", { class: "grid", x1: x(t), x2: x(t), y1: Y0, y2: Y1 }, chart);
      svg("text", { class: "tick", x: x(t), y: Y1 + 18 }, chart).textContent = fmtTime(t);
    }
    const label = svg("text", { class: "axis-label", x: 4, y: Y0 + 10 }, chart);
    label.textContent = "saliency";
    const shades = moments.map(([st, ed, score], rank) => {
      if (rank >= SHADED) return null;
      const rect = svg("rect", { class: "moment-shade", x: x(st), y: Y0, width: Math.max(x(ed) - x(st), 1),
        height: Y1 - Y0, "fill-opacity": (0.45 - 0.07 * rank).toFixed(2), "data-rank": rank + 1,
        "data-start": st, "data-end": ed }, chart);
      svg("title", {}, rect).textContent = `#${rank + 1} ${fmtTime(st)}–${fmtTime(ed)} (${score.toFixed(4)})`;
      return rect;
    });
    const points = sal.map((s, k) => `${x((k + 0.5) * CLIP).toFixed(2)},${y(s).toFixed(2)}`).join(" ");
    svg("polyline", { class: "curve", points }, chart);
    const playhead = svg("line", { class: "playhead", x1: X0, x2: X0, y1: Y0 - 4, y2: Y1 + 4 }, chart);
    const timeAt = (event) => {
      const pt = chart.createSVGPoint();
      pt.x = event.clientX; pt.y = event.clientY;
      const local = pt.matrixTransform(chart.getScreenCTM().inverse());
      return ((Math.min(Math.max(local.x, X0), X1) - X0) / (X1 - X0)) * duration;
    };
    chart.addEventListener("click", (e) => seek(timeAt(e), false));
    return { chart, shades, playhead, x };
  }

  function render(job) {
    const video = job.video;
    const timing = job.features === "memory" ? "features in memory"
      : job.features === "cache" ? "features from the cache"
      : `features extracted in ${(job.timings.features_s || 0).toFixed(1)} s`;
    $("results-title").textContent = `${job.results.length} quer${job.results.length === 1 ? "y" : "ies"} on ` +
      `${video.name} · ${timing} · moments in ${Math.round((job.timings.predict_s || 0) * 1000)} ms`;
    const download = $("download");
    download.href = job.download;
    download.setAttribute("download", `${video.name.replace(/\.[^.]*$/, "")}.moments.json`);
    $("results-head").hidden = false;
    if (job.notes && job.notes.length) { $("notes").textContent = job.notes.join(" · "); $("notes").hidden = false; }
    const box = $("results");
    box.replaceChildren();
    cards = [];
    job.results.forEach((result, qi) => {
      const pred = result.prediction;
      const duration = Math.max(pred.duration, CLIP);
      const card = el("article", { class: "result", "data-query": pred.query, "data-index": qi });
      card.appendChild(el("h3", {}, `“${pred.query}”`));
      const moments = uniqueMoments(pred.pred_relevant_windows);
      const drawn = drawChart(pred, moments, duration);
      card.appendChild(drawn.chart);
      const columns = el("div", { class: "columns" });
      const left = el("div"), right = el("div");
      left.appendChild(el("div", { class: "section-label" }, "moments (click to play)"));
      const list = el("ol", { class: "moments" });
      const entries = moments.map(([st, ed, score], rank) => {
        const button = el("button", { type: "button", class: "moment", "data-start": st, "data-end": ed,
          "data-score": score, title: `play from ${fmtTime(st)}` });
        button.append(el("span", { class: "rank" }, `#${rank + 1}`), el("span", { class: "span" },
          `${fmtTime(st)}–${fmtTime(ed)}`), el("span", { class: "score" }, score.toFixed(4)));
        button.addEventListener("click", () => seek(st, true));
        const shade = drawn.shades[rank];
        if (shade) {
          button.addEventListener("mouseenter", () => shade.classList.add("hover"));
          button.addEventListener("mouseleave", () => shade.classList.remove("hover"));
        }
        const li = el("li");
        li.appendChild(button);
        list.appendChild(li);
        return { el: button, start: st, end: ed };
      });
      if (!moments.length) list.appendChild(el("li", { class: "muted" }, "(no moments)"));
      left.appendChild(list);
      right.appendChild(el("div", { class: "section-label" }, "top highlight clips"));
      const thumbs = el("div", { class: "thumbs" });
      for (const [clip, score] of result.top_clips) {
        const start = clip * CLIP, end = Math.min((clip + 1) * CLIP, pred.duration);
        const button = el("button", { type: "button", class: "thumb", "data-clip": clip, "data-start": start,
          title: `clip ${fmtTime(start)}–${fmtTime(end)}, saliency ${score.toFixed(4)}: click to play` });
        button.append(el("img", { src: `/api/videos/${video.id}/thumbs/${clip}.jpg`, alt: `frame at ${fmtTime(start)}`,
          loading: "lazy" }), el("span", {}, `${fmtTime(start)} · ${score.toFixed(2)}`));
        button.addEventListener("click", () => seek(start, true));
        thumbs.appendChild(button);
      }
      right.appendChild(thumbs);
      columns.append(left, right);
      card.appendChild(columns);
      box.appendChild(card);
      cards.push({ playhead: drawn.playhead, x: drawn.x, moments: entries });
    });
    updatePlayhead();
  }

  // ---- the player's position on every curve -------------------------------------------
  function updatePlayhead() {
    const t = player.currentTime || 0;
    for (const card of cards) {
      const px = card.x(t).toFixed(2);
      card.playhead.setAttribute("x1", px);
      card.playhead.setAttribute("x2", px);
      card.playhead.setAttribute("data-time", t.toFixed(3));
      for (const m of card.moments) m.el.classList.toggle("playing", t >= m.start && t < m.end);
    }
  }
  function animate() {
    updatePlayhead();
    if (!player.paused && !player.ended) requestAnimationFrame(animate);
  }
  for (const ev of ["timeupdate", "seeked", "seeking", "loadedmetadata"]) player.addEventListener(ev, updatePlayhead);
  player.addEventListener("play", () => requestAnimationFrame(animate));

  // ---- start ----------------------------------------------------------------------------
  async function start() {
    try {
      info = await api("GET", "/api/info");
      $("model-info").textContent = `${info.model} · ${info.weights} · profile ${info.profile} · ${info.device} · ` +
        `videos up to ${fmtTime(info.max_duration)}`;
      if (info.folders) {
        const { videos } = await api("GET", "/api/videos");
        const select = $("folder-select");
        for (const v of videos) select.appendChild(el("option", { value: v.id }, v.name));
        $("folder-row").hidden = false;
      }
    } catch (err) {
      showError(err.message);
    }
    document.body.setAttribute("data-ready", "true");
  }
  start();
})();
