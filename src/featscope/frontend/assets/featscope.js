/* featscope dashboard: clientside callbacks (window.dash_clientside.featscope) and small page behaviours.
 * What runs here never needs the server: nav highlighting, downloads of a figure or its data, the linked
 * selection between projection A and B (Plotly.restyle on the other map), hover thumbnails, uploads
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
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function toCsv(rows) {
    if (!rows || !rows.length) return "";
    const cols = [];
    rows.forEach((r) => Object.keys(r).forEach((k) => { if (!cols.includes(k)) cols.push(k); }));
    return [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n";
  }

  // The linked selection: indices picked in one map, highlighted in the other (same row order in both).
  function selectedIndices(selected) {
    if (!selected || !selected.points) return null;
    const idx = new Array(selected.points.length);
    for (let i = 0; i < selected.points.length; i++) {
      const p = selected.points[i];
      idx[i] = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
    }
    return idx;
  }

  function highlight(figId, indices) {
    const gd = plotDiv(figId);
    if (!gd || !gd.data || !gd.data.length || !window.Plotly) return false;
    window.Plotly.restyle(gd, {selectedpoints: [indices]}, [0]);
    return true;
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    featscope: {
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

      // Projections: a selection in one map highlights the same images in the other, in the browser.
      linkSelection: function (selA, selB, mode) {
        if (mode !== "webgl") return [NO(), NO()];
        const fromA = triggeredProp().startsWith("proj-a.");
        const sel = fromA ? selA : selB;
        const idx = selectedIndices(sel);
        const started = performance.now();
        highlight(fromA ? "proj-b" : "proj-a", idx);
        window.fsHighlight = {ms: performance.now() - started, count: idx ? idx.length : 0, at: performance.now()};
        // Typed arrays do not travel in Dash's event data: read the ids from the drawn trace.
        const gd = plotDiv(fromA ? "proj-a" : "proj-b");
        const cd = gd && gd._fullData && gd._fullData[0] ? gd._fullData[0].customdata : null;
        const ids = [];
        if (idx && cd) for (let i = 0; i < idx.length && ids.length < 500; i++) ids.push(Number(cd[idx[i]]));
        return [{indices: idx ? idx.length : 0, image_ids: ids, from: fromA ? "A" : "B"}, ""];
      },

      // Raster maps: the lasso polygon or box goes to the server, which applies it to every point.
      rasterSelection: function (selA, selB, mode) {
        if (mode !== "raster") return NO();
        const fromA = triggeredProp().startsWith("proj-a.");
        const sel = fromA ? selA : selB;
        const shape = sel ? {range: sel.range || null, lassoPoints: sel.lassoPoints || null} : null;
        return {from: fromA ? "A" : "B", selected: shape, at: Date.now()};
      },

      hoverThumb: function (hoverA, hoverB, meta) {
        const fromA = triggeredProp().startsWith("proj-a.");
        const hover = fromA ? hoverA : hoverB;
        const hide = [false, NO(), NO(), NO()];
        if (!hover || !hover.points || !hover.points.length) return fromA ? [...hide, NO(), NO(), NO(), NO()] : [NO(), NO(), NO(), NO(), ...hide];
        const p = hover.points[0];
        const gd = plotDiv(fromA ? "proj-a" : "proj-b");
        const trace = gd && gd._fullData ? gd._fullData[p.curveNumber || 0] : null;
        const n = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
        const id = trace && trace.customdata ? Number(trace.customdata[n]) : p.customdata;
        if (id === undefined || id === null || Number.isNaN(id)) return [NO(), NO(), NO(), NO(), NO(), NO(), NO(), NO()];
        const colours = trace && trace.marker ? trace.marker.color : null;
        const code = colours && colours.length !== undefined && typeof colours !== "string" ? Number(colours[n]) : undefined;
        const classes = (meta && meta.classes) || [];
        const label = typeof code === "number" && classes[code] !== undefined ? classes[code] + " · " : "";
        const shown = [true, p.bbox, "/api/v1/images/" + id + "/thumbnail?size=160", label + "image " + id];
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
