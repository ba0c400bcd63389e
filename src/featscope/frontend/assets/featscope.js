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

  // The linked selection. Maps A and B hold the same images in the same traces and order, so a selected
  // (trace, point) in one map is the same image in the other: per-trace point lists carry over unchanged.
  function selectedByTrace(ev, nTraces) {
    const lists = Array.from({length: nTraces}, () => []);
    for (const p of (ev && ev.points) || []) {
      const i = p.pointIndex !== undefined ? p.pointIndex : p.pointNumber;
      if (lists[p.curveNumber]) lists[p.curveNumber].push(i);
    }
    return lists;
  }

  function highlight(figId, lists) {
    const gd = plotDiv(figId);
    if (!gd || !gd.data || !gd.data.length || !window.Plotly) return false;
    const traces = gd.data.map((_, i) => i);
    const value = lists ? traces.map((i) => lists[i] || []) : traces.map(() => null);
    window.Plotly.restyle(gd, {selectedpoints: value}, traces);
    return true;
  }

  function selectedIds(gd, lists, limit) {
    const ids = [];
    lists.forEach((rows, t) => {
      const cd = gd._fullData[t] && gd._fullData[t].customdata;
      for (let k = 0; cd && k < rows.length && ids.length < limit; k++) ids.push(Number(cd[rows[k]]));
    });
    return ids;
  }

  // One selection event, handled where it happens: the other map is restyled in the same event (no round
  // through Dash's state, which would copy every selected point), then the page's stores are set for the
  // thumbnail grid (WebGL) or for the server, which applies a raster map's lasso to every point.
  function onSelected(from, toId, role, ev) {
    const mode = from.__fsMode;
    const set = window.dash_clientside.set_props;
    if (mode === "webgl") {
      const lists = ev ? selectedByTrace(ev, from.data.length) : null;
      highlight(toId, lists);
      const count = lists ? lists.reduce((n, l) => n + l.length, 0) : 0;
      set("proj-selection", {data: {indices: count, image_ids: lists ? selectedIds(from, lists, 500) : [], from: role}});
    } else if (mode === "raster") {
      const shape = ev ? {range: ev.range || null, lassoPoints: ev.lassoPoints || null} : null;
      set("proj-raster-select", {data: {from: role, selected: shape, at: Date.now()}});
    }
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

      // Called when the maps are (re)built: links them through Plotly listeners (attached once per map).
      linkMaps: function (mode) {
        const attach = (tries) => {
          const a = plotDiv("proj-a"), b = plotDiv("proj-b");
          if (!a || !b || !a.on || !b.on) {
            if (tries > 0) setTimeout(() => attach(tries - 1), 100);
            return;
          }
          for (const [from, to, role] of [[a, "proj-b", "A"], [b, "proj-a", "B"]]) {
            from.__fsMode = mode;
            if (from.__fsLinked) continue;
            from.__fsLinked = true;
            // dcc.Graph copies every selected point (selectedData) and every restyle - here the highlight's
            // per-trace point lists (restyleData) - into Dash's state; nothing reads them and the copies
            // cost more than the highlight itself, so these events of the maps are ours alone.
            ["plotly_selected", "plotly_selecting", "plotly_deselect", "plotly_restyle"]
              .forEach((e) => from.removeAllListeners(e));
            from.on("plotly_selected", (ev) => onSelected(from, to, role, ev));
            from.on("plotly_deselect", () => onSelected(from, to, role, null));
          }
        };
        attach(30);
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
