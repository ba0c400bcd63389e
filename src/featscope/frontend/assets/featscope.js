/* featscope dashboard: clientside callbacks (window.dash_clientside.featscope) and small page behaviours.
 * What runs here never needs the server: nav highlighting, downloads of a figure or its data, the linked
 * selection between projection A and B (a lasso of our own, painted over both maps), hover thumbnails, uploads
 * (posted straight to the REST API so its limits and errors apply as they are). */
(function () {
  "use strict";
  const NO = () => window.dash_clientside.no_update;

  function triggered() {
    const ctx = window.dash_clientside.callback_context;
    if (!ctx || !ctx.triggered || !ctx.triggered.length) return null;
    const t = ctx.triggered[0];
    if (!t.value) return null;
    const id = t.prop_id.slice(0, t.prop_id.lastIndexOf("."));
    try { return JSON.parse(id); } catch (e) { return id; }
  }

  function triggeredProp() {
    const ctx = window.dash_clientside.callback_context;
    return ctx && ctx.triggered && ctx.triggered.length ? ctx.triggered[0].prop_id : "";
  }

  function plotDiv(figId) {
    const holder = document.getElementById(figId);
    return holder ? (holder.classList.contains("js-plotly-plot") ? holder : holder.querySelector(".js-plotly-plot")) : null;
  }

  function saveBlob(text, type, filename) {
    const url = URL.createObjectURL(new Blob([text], {type}));
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function csvCell(v) {
    if (v === null || v === undefined) return "";
    let s = typeof v === "object" ? JSON.stringify(v) : String(v);
    // a text cell a spreadsheet would run as a formula (file names come from users) is kept as text
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function toCsv(rows) {
    if (!rows || !rows.length) return "";
    const cols = [];
    rows.forEach((r) => Object.keys(r).forEach((k) => { if (!cols.includes(k)) cols.push(k); }));
    return [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n";
  }

  // ---- The linked selection (WebGL maps).
  // Maps A and B hold the same images in the same traces and order, so a selected (trace, point) in one map is
  // the same image in the other: per-trace point lists carry over unchanged.
  //
  // Why a lasso of our own instead of Plotly's: Plotly's selection restyles every point of a scattergl map and
  // redraws its whole WebGL canvas - in the map lassoed and, to link them, in the other one. At 100k points in
  // headless Chromium (software GL) one such redraw is about 420 ms of GPU-process time (Chrome trace:
  // GLES2::ReadPixels waiting on the WebGL command buffer), so the highlight took 1.4 s. Here the WebGL points
  // are never redrawn: the lasso is tested against the maps' own coordinates (typed arrays) and a 2-D canvas
  // over each map veils it and paints only the selected points. Plotly still owns zoom, pan, hover and the
  // modebar; a touch lasso (Plotly's own) lands in the same highlight through plotly_selected.
  const SEL = {lists: null};

  function selectedByTrace(ev, nTraces) {
    const lists = Array.from({length: nTraces}, () => []);
    for (const p of (ev && ev.points) || []) {
      const i = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
      if (lists[p.curveNumber]) lists[p.curveNumber].push(i);
    }
    return lists;
  }

  function selectedIds(gd, lists, limit) {
    const ids = [];
    lists.forEach((rows, t) => {
      const cd = gd._fullData[t] && gd._fullData[t].customdata;
      for (let k = 0; cd && k < rows.length && ids.length < limit; k++) ids.push(Number(cd[rows[k]]));
    });
    return ids;
  }

  // The overlay of one map: a canvas for the highlight and an SVG path for the lasso, over the plot area.
  function overlayOf(gd) {
    const holder = gd.querySelector(".svg-container");
    if (!holder || !gd._fullLayout || !gd._fullLayout.xaxis) return null;
    let o = gd.__fsOverlay;
    if (!o || !o.root.isConnected) {
      const root = document.createElement("div");
      root.className = "fs-sel-layer";
      const canvas = document.createElement("canvas");
      canvas.className = "fs-sel-canvas";
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("class", "fs-sel-outline");
      svg.appendChild(path);
      root.append(canvas, svg);
      // above the WebGL points, below Plotly's top layer (hover labels, zoom box) and the modebar
      holder.insertBefore(root, holder.querySelectorAll(":scope > .main-svg")[1] || holder.querySelector(".modebar-container"));
      o = gd.__fsOverlay = {root, canvas, svg, path};
    }
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    Object.assign(o.root.style, {left: xa._offset + "px", top: ya._offset + "px",
                                 width: xa._length + "px", height: ya._length + "px"});
    o.w = xa._length;
    o.h = ya._length;
    return o;
  }

  function outline(gd, poly) {
    const o = overlayOf(gd);
    if (!o) return;
    o.path.setAttribute("d", poly && poly.length > 1 ? "M" + poly.map((p) => p[0] + "," + p[1]).join("L") + "Z" : "");
  }

  // Veil the map and paint the selected points in their trace's colour; lists = null clears.
  function paint(gd, lists, final) {
    const o = overlayOf(gd);
    if (!o || !gd._fullData) return;
    const dpr = window.devicePixelRatio || 1, c = o.canvas;
    c.width = Math.max(1, Math.round(o.w * dpr));
    c.height = Math.max(1, Math.round(o.h * dpr));
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    let count = 0;
    if (lists) {
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
      g.globalAlpha = 0.88;
      g.fillStyle = gd._fullLayout.plot_bgcolor || "#fff";
      g.fillRect(0, 0, o.w, o.h);
      g.globalAlpha = 1;
      lists.forEach((rows, t) => {
        const tr = gd._fullData[t];
        if (!tr || !rows.length) return;
        const size = Number(tr.marker && tr.marker.size) || 4, r = size / 2;
        g.fillStyle = (tr.marker && typeof tr.marker.color === "string") ? tr.marker.color : "#111827";
        g.beginPath();
        for (const i of rows) {
          const x = xa.c2p(tr.x[i]), y = ya.c2p(tr.y[i]);
          if (size <= 3) g.rect(x - r, y - r, size, size);
          else { g.moveTo(x + r, y); g.arc(x, y, r, 0, 2 * Math.PI); }
        }
        g.fill();
        count += rows.length;
      });
    }
    c.dataset.count = String(count);
    c.dataset.final = final ? "1" : "0";
  }

  // Point-in-polygon (even-odd rule) over every point, in plot-area pixels; a bounding box skips most points.
  function pointsInside(gd, poly) {
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const [x, y] of poly) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
    const n = poly.length, px = Float64Array.from(poly, (p) => p[0]), py = Float64Array.from(poly, (p) => p[1]);
    return gd._fullData.map((tr) => {
      const rows = [];
      const xs = tr.x || [], ys = tr.y || [];
      for (let i = 0; i < xs.length; i++) {
        const x = xa.c2p(xs[i]);
        if (!(x >= x0 && x <= x1)) continue;
        const y = ya.c2p(ys[i]);
        if (!(y >= y0 && y <= y1)) continue;
        let inside = false;
        for (let a = 0, b = n - 1; a < n; b = a++) {
          if ((py[a] > y) !== (py[b] > y) && x < (px[b] - px[a]) * (y - py[a]) / (py[b] - py[a]) + px[a]) inside = !inside;
        }
        if (inside) rows.push(i);
      }
      return rows;
    });
  }

  // Show a selection in both maps and, once it is final, tell the page (the thumbnail grid); null clears.
  function applySelection(from, other, role, lists, final) {
    SEL.lists = lists;
    paint(from, lists, final);
    if (other) paint(other, lists, final);
    if (!final) return;
    const count = lists ? lists.reduce((k, l) => k + l.length, 0) : 0;
    window.dash_clientside.set_props("proj-selection", {
      data: {indices: count, image_ids: lists ? selectedIds(from, lists, 500) : [], from: role}});
  }

  function clearSelection() {
    for (const id of ["proj-a", "proj-b"]) {
      const gd = plotDiv(id);
      if (gd && gd.__fsOverlay) { outline(gd, null); paint(gd, null, true); }
      if (gd && gd.data && window.Plotly && gd.data.some((t) => t.selectedpoints)) {  // a touch lasso's (Plotly's own)
        window.Plotly.restyle(gd, {selectedpoints: gd.data.map(() => null)}, gd.data.map((_, i) => i));
      }
    }
    if (SEL.lists) {
      SEL.lists = null;
      window.dash_clientside.set_props("proj-selection", {data: {indices: 0, image_ids: [], from: "A"}});
    }
  }

  // A lasso (dragmode "lasso") or a box ("select") drawn on a WebGL map. Runs before Plotly's own drag
  // handler (capture phase) and keeps the press from it; a click without a drag clears the selection.
  function startLasso(gd, other, role, ev) {
    const box = ev.target.getBoundingClientRect();
    const at = (e) => [Math.min(Math.max(e.clientX - box.left, 0), box.width),
                       Math.min(Math.max(e.clientY - box.top, 0), box.height)];
    const rect = gd._fullLayout.dragmode === "select";
    const start = at(ev);
    let pts = [start], moved = false, frame = 0;
    const shape = () => {
      const end = pts[pts.length - 1];
      return rect ? [start, [end[0], start[1]], end, [start[0], end[1]]] : pts;
    };
    if (window.Plotly && window.Plotly.Fx) window.Plotly.Fx.unhover(gd);
    for (const m of [gd, other]) if (m) outline(m, null);
    const live = () => {
      frame = 0;
      applySelection(gd, other, role, pointsInside(gd, shape()), false);
    };
    const move = (e) => {
      e.stopPropagation();  // no hover labels while drawing
      const p = at(e), last = pts[pts.length - 1];
      if (Math.abs(p[0] - last[0]) + Math.abs(p[1] - last[1]) < 2) return;
      moved = true;
      if (rect) pts = [start, p]; else pts.push(p);
      outline(gd, shape());
      if (!frame) frame = requestAnimationFrame(live);
    };
    const up = () => {
      window.removeEventListener("mousemove", move, true);
      window.removeEventListener("mouseup", up, true);
      window.removeEventListener("blur", up);
      if (frame) cancelAnimationFrame(frame);
      const lists = moved && shape().length >= 3 ? pointsInside(gd, shape()) : null;
      if (!lists || !lists.some((rows) => rows.length)) { clearSelection(); return; }  // nothing caught: nothing veiled
      outline(gd, shape());
      applySelection(gd, other, role, lists, true);
    };
    window.addEventListener("mousemove", move, true);
    window.addEventListener("mouseup", up, true);
    window.addEventListener("blur", up, {once: true});  // the button released outside the window
  }

  // What a selection's (trace, point) lists refer to: each trace's name, length and end points.
  function dataSignature(gd) {
    return (gd._fullData || []).map((t) => {
      const n = t.x ? t.x.length : 0;
      return [t.name, n, n ? t.x[0] : "", n ? t.y[n - 1] : ""].join(":");
    }).join("|");
  }

  // Zoom, pan or resize moved the points: paint the selection again where they are now (the lasso's outline,
  // drawn in the old pixels, goes).
  function repaint(gd) {
    if (!gd.__fsOverlay) return;
    outline(gd, null);
    paint(gd, SEL.lists, true);
  }

  // A selection made by Plotly itself (a touch lasso; every lasso on a raster map): WebGL maps get the same
  // overlay; a raster map's shape goes to the server, which applies it to every point.
  function onSelected(from, to, role, ev) {
    const mode = from.__fsMode;
    if (mode === "webgl") {
      applySelection(from, to, role, ev ? selectedByTrace(ev, from.data.length) : null, true);
    } else if (mode === "raster") {
      const shape = ev ? {range: ev.range || null, lassoPoints: ev.lassoPoints || null} : null;
      window.dash_clientside.set_props("proj-raster-select", {data: {from: role, selected: shape, at: Date.now()}});
    }
  }

  window.featscope = {clearSelection};  // for benchmarks/bench_dashboard.py, which clears between lassos

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    featscope: {
      rememberPair: function (as, bs, remembered) {
        // Always answers (the same pair again if nothing changed): navPair waits on this callback, and Dash
        // drops a waiting callback whose input comes back as no_update.
        for (let i = 0; i < (as || []).length; i++) {
          const a = as[i], b = (bs || [])[i];
          if (a !== null && a !== undefined && b !== null && b !== undefined) return {a: a, b: b};
        }
        return remembered || null;
      },

      navPair: function (pair, ids) {  // links to pages that compare a pair open on the remembered one
        const q = pair && pair.a != null && pair.b != null ? `?a=${pair.a}&b=${pair.b}` : "";
        return ids.map((id) => (id.pair ? id.path + q : id.path));
      },

      navActive: function (pathname, ids) {
        const path = pathname || "/";
        return ids.map((id) => {
          const p = id.path;
          const on = p === "/" ? path === "/" : (path === p || path.startsWith(p + "/") ||
                     (p === "/image" && path.startsWith("/image/")));
          return on ? "fs-nav-link active" : "fs-nav-link";
        });
      },

      downloadImage: function () {
        const t = triggered();
        if (!t || !t.fig) return NO();
        const gd = plotDiv(t.fig);
        if (gd && window.Plotly) {
          window.Plotly.downloadImage(gd, {format: t.fmt, filename: t.fig, scale: t.fmt === "png" ? 2 : 1});
        }
        return NO();
      },

      downloadData: function () {
        const t = triggered();
        if (!t || !t.fig) return NO();
        const ctx = window.dash_clientside.callback_context;
        const states = ctx.states_list && ctx.states_list[0] ? ctx.states_list[0] : [];
        const entry = states.find((s) => s.id && s.id.fig === t.fig);
        const data = entry && entry.value;
        if (!data || !data.rows) return "nothing to download yet";
        const name = (data.name || t.fig).replace(/[^A-Za-z0-9_.-]+/g, "-");
        if (t.fmt === "csv") saveBlob(toCsv(data.rows), "text/csv", name + ".csv");
        else saveBlob(JSON.stringify({meta: data.meta || {}, rows: data.rows}, null, 1), "application/json", name + ".json");
        return "downloaded " + name + "." + t.fmt;
      },

      // Called when the maps are (re)built: links them (attached once per map) and drops a stale selection.
      linkMaps: function (mode) {
        const attach = (tries) => {
          const a = plotDiv("proj-a"), b = plotDiv("proj-b");
          if (!a || !b || !a.on || !b.on) {
            if (tries > 0) setTimeout(() => attach(tries - 1), 100);
            return;
          }
          const changed = a.__fsMode !== mode;  // the mode is sent again with unchanged maps: keep the selection
          for (const [from, to, role] of [[a, b, "A"], [b, a, "B"]]) {
            from.__fsMode = mode;
            if (from.__fsLinked) continue;
            from.__fsLinked = true;
            // dcc.Graph copies every selected point (selectedData) and every restyle into Dash's state; nothing
            // reads them, so these events of the maps are ours alone.
            ["plotly_selected", "plotly_selecting", "plotly_deselect", "plotly_restyle"]
              .forEach((e) => from.removeAllListeners(e));
            from.addEventListener("mousedown", (ev) => {
              const dm = from._fullLayout && from._fullLayout.dragmode;
              if (from.__fsMode !== "webgl" || ev.button !== 0 || (dm !== "lasso" && dm !== "select")) return;
              if (!ev.target.classList || !ev.target.classList.contains("nsewdrag")) return;
              ev.stopPropagation();
              ev.preventDefault();
              startLasso(from, to, role, ev);
            }, true);
            from.on("plotly_selected", (ev) => onSelected(from, to, role, ev));
            from.on("plotly_deselect", () => onSelected(from, to, role, null));
            from.on("plotly_relayout", () => repaint(from));
            from.on("plotly_relayouting", () => {  // pan or scroll-zoom under way: follow the points each frame
              if (!from.__fsFrame) from.__fsFrame = requestAnimationFrame(() => { from.__fsFrame = 0; repaint(from); });
            });
            from.__fsData = dataSignature(from);
            from.on("plotly_react", () => {  // other points (colouring, projection): the lists no longer apply
              const now = dataSignature(from);
              if (now !== from.__fsData) { from.__fsData = now; clearSelection(); } else repaint(from);
            });
          }
          if (changed && mode !== "webgl") clearSelection();
        };
        attach(100);
        return NO();
      },

      hoverThumb: function (hoverA, hoverB) {
        const fromA = triggeredProp().startsWith("proj-a.");
        const hover = fromA ? hoverA : hoverB;
        const none = [NO(), NO(), NO(), NO()];
        const hidden = [false, NO(), NO(), NO()];
        if (!hover || !hover.points || !hover.points.length) return fromA ? [...hidden, ...none] : [...none, ...hidden];
        const p = hover.points[0];
        const gd = plotDiv(fromA ? "proj-a" : "proj-b");
        const trace = gd && gd._fullData ? gd._fullData[p.curveNumber || 0] : null;
        const n = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
        const id = trace && trace.customdata ? Number(trace.customdata[n]) : Number(p.customdata);
        if (!Number.isFinite(id)) return [...none, ...none];
        const group = trace && trace.name && !/ sample$/.test(trace.name) ? trace.name + " · " : "";
        const shown = [true, p.bbox, "/api/v1/images/" + id + "/thumbnail?size=160", group + "image " + id];
        return fromA ? [...shown, false, NO(), NO(), NO()] : [false, NO(), NO(), NO(), ...shown];
      },

      // /upload: post the chosen file to the REST API (its size, pixel and format checks), keep the answer.
      uploadFile: async function (contents, filename) {
        if (!contents) return NO();
        const blob = await (await fetch(contents)).blob();
        const form = new FormData();
        form.append("file", blob, filename || "upload");
        const r = await fetch("/api/v1/uploads", {method: "POST", body: form, credentials: "same-origin"});
        let body = {};
        try { body = await r.json(); } catch (e) { body = {detail: "the server answered " + r.status}; }
        if (!r.ok) return {error: body.detail || ("upload refused (" + r.status + ")"), filename};
        return Object.assign({filename, preview: contents.length < 4000000 ? contents : null}, body);
      },
    },
  });

  // Log out (nav bar, shown when the server has a token): clear the cookie, go to the login page.
  document.addEventListener("click", async (event) => {
    const el = event.target.closest && event.target.closest("#fs-logout");
    if (!el) return;
    event.preventDefault();
    await fetch("/api/v1/logout", {method: "POST", credentials: "same-origin"});
    window.location.assign("/login");
  });
})();
