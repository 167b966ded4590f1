// The engine's dashboard page: one WebSocket (/ws) of a snapshot then deltas; no build step.
"use strict";
(function () {
  const STREAMS = ["equity", "candles", "decisions", "predictions", "orders", "trades", "events"];
  const $ = (id) => document.getElementById(id);
  const dash = (window.dash = { connected: false, messages: 0, snapshots: 0, equityPoints: 0,
    decisionRows: 0, streams: {}, values: {}, cursor: null });
  for (const s of STREAMS) dash.streams[s] = [];
  const LC = window.LightweightCharts;
  const opts = { autoSize: true, layout: { background: { color: "#1b212b" }, textColor: "#c9d1d9" },
    grid: { vertLines: { color: "#262d38" }, horzLines: { color: "#262d38" } },
    timeScale: { timeVisible: true, secondsVisible: false } };
  const eqChart = LC.createChart($("equity"), opts);
  const eqLine = eqChart.addLineSeries({ color: "#58a6ff", lineWidth: 2 });
  const ddChart = LC.createChart($("drawdown"), opts);
  const ddArea = ddChart.addAreaSeries({ lineColor: "#ff7b72", topColor: "rgba(255,123,114,0.05)",
    bottomColor: "rgba(255,123,114,0.4)", invertFilledArea: false });
  const pxChart = LC.createChart($("price"), opts);
  const candles = pxChart.addCandlestickSeries();
  let priceLines = [];
  const sec = (ms) => Math.floor(ms / 1000);
  const num = (v, d = 2) => (v === null || v === undefined ? "" : Number(v).toFixed(d));
  const esc = (v) => String(v === null || v === undefined ? "" : v).replace(/[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  function table(el, head, rows) {
    el.innerHTML = "<tr>" + head.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr>" +
      rows.map((r) => "<tr>" + r.map((c) => "<td>" + c + "</td>").join("") + "</tr>").join("");
  }
  function interval() {
    const c = dash.streams.candles;
    for (let i = 1; i < c.length; i++) if (c[i][0] === c[i - 1][0] && c[i][1] > c[i - 1][1]) return c[i][1] - c[i - 1][1];
    return 60000;
  }
  const upto = (t) => dash.cursor === null || t <= dash.cursor;

  // ------------------------------------------------------------------ render
  let pending = false;
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(render); } }
  function render() {
    pending = false;
    const run = dash.values.run || {};
    const S = dash.streams;
    $("run").textContent = (run.run_id || "") + " · " + (run.mode || "") + " · " + (run.strategy || "") +
      " · " + (run.status || "");
    syncSymbols(run.symbols || []);
    // equity and drawdown
    const eq = S.equity.filter((p) => upto(p[0]) && p[1] !== null);
    let peak = -Infinity; const dd = [], line = [];
    let last = null;
    for (const [t, v] of eq) { const s = sec(t); if (last !== null && s <= last) continue; last = s;
      peak = Math.max(peak, v); line.push({ time: s, value: v }); dd.push({ time: s, value: peak > 0 ? (v / peak - 1) * 100 : 0 }); }
    eqLine.setData(line); ddArea.setData(dd);
    dash.equityPoints = line.length;
    const acct = dash.values.account;
    const init = run.initial_equity;
    if (acct) $("acct").textContent = "equity " + num(acct.equity) + " · PnL " + num(acct.pnl_total) +
      " (realised " + num(acct.pnl_realized) + ", unrealised " + num(acct.pnl_unrealized) + ")";
    else if (line.length) $("acct").textContent = "equity " + num(line[line.length - 1].value) +
      (init ? " · PnL " + num(line[line.length - 1].value - init) : "");
    // price and markers
    const sym = $("symbol").value;
    const bars = S.candles.filter((c) => c[0] === sym && upto(c[1]) && c[5] !== null).map((c) =>
      ({ time: sec(c[1]), open: c[2], high: c[3], low: c[4], close: c[5] }));
    candles.setData(bars);
    const step = interval();
    const grid = (t) => sec(Math.floor(t / step) * step);
    const marks = [];
    for (const o of S.orders) {  // fills: entries as arrows, exits (signal, stop, target...) as circles
      if (o.symbol !== sym || o.status !== "filled" || o.updated_at === null || !upto(o.updated_at)) continue;
      const buy = o.side === "buy", px = o.avg_price !== null ? o.avg_price : o.price;
      if (o.leg === "entry") marks.push({ time: grid(o.updated_at), position: buy ? "belowBar" : "aboveBar",
        color: buy ? "#2ea043" : "#f85149", shape: buy ? "arrowUp" : "arrowDown", text: (buy ? "buy " : "sell ") + num(px) });
      else marks.push({ time: grid(o.updated_at), position: buy ? "belowBar" : "aboveBar",
        color: o.leg === "stop" || o.leg === "liquidation" ? "#ff7b72" : o.leg === "target" ? "#7ee787" : "#d2a8ff",
        shape: "circle", text: o.leg + " " + num(px) });
    }
    marks.sort((a, b) => a.time - b.time);
    candles.setMarkers(marks);
    dash.markers = marks.length;
    for (const pl of priceLines) candles.removePriceLine(pl);
    const resting = restingOrders();
    priceLines = resting.filter((o) => o.symbol === sym && o.price !== null).map((o) =>
      candles.createPriceLine({ price: o.price, color: o.leg === "stop" ? "#ff7b72" : "#7ee787",
        lineStyle: 2, lineWidth: 1, title: o.leg }));
    // tables
    positions(); table($("orders"), ["symbol", "leg", "side", "type", "qty", "price"],
      resting.map((o) => [esc(o.symbol), esc(o.leg), esc(o.side), esc(o.type), num(o.quantity, 4), num(o.price)]));
    decisions(); health();
    const ev = S.events.filter((e) => upto(e.time)).slice(-8).reverse();
    table($("events"), ["time", "severity", "message"], (run.notes || []).map((n) => ["", "note", esc(n)]).concat(
      ev.map((e) => [new Date(e.time).toISOString().slice(0, 16), esc(e.severity), esc(e.message).slice(0, 160)])));
  }
  function syncSymbols(symbols) {
    const sel = $("symbol");
    if (sel.options.length === symbols.length) return;
    sel.innerHTML = symbols.map((s) => "<option>" + esc(s) + "</option>").join("");
  }
  function restingOrders() {
    const last = new Map();
    for (const o of dash.streams.orders) {
      if (dash.cursor !== null && (o.created_at === null || o.created_at > dash.cursor)) continue;
      const prev = last.get(o.client_order_id);
      if (o.updated_at !== null && !upto(o.updated_at)) { if (!prev) last.set(o.client_order_id, { ...o, status: "new" }); continue; }
      last.set(o.client_order_id, o);
    }
    return [...last.values()].filter((o) => o.status === "new" || o.status === "open" ||
      o.status === "partially_filled").filter((o) => o.type !== "market");
  }
  function positions() {
    const p = dash.values.positions;
    if (p && dash.cursor === null) {
      table($("positions"), ["symbol", "qty", "entry"], p.map((x) => [esc(x.symbol), num(x.qty, 4), num(x.entry_price)]));
      return;
    }
    const last = new Map();
    for (const d of dash.streams.decisions) if (upto(d.open_time)) last.set(d.symbol, d);
    table($("positions"), ["symbol", "target", "price"], [...last.values()].map((d) =>
      [esc(d.symbol), num(d.target_position, 4), num(d.price)]));
  }
  function decisions() {
    const models = new Map();
    for (const p of dash.streams.predictions) {
      if (!upto(p.open_time)) continue;
      const k = p.symbol + "|" + p.open_time;
      if (!models.has(k)) models.set(k, []);
      models.get(k).push(p);
    }
    const rows = dash.streams.decisions.filter((d) => upto(d.open_time)).slice(-40).reverse();
    dash.decisionRows = rows.length;
    table($("decisions"), ["bar", "symbol", "action", "p(up)", "agree", "unc", "target", "models"],
      rows.map((d) => [new Date(d.open_time).toISOString().slice(5, 16).replace("T", " "), esc(d.symbol),
        esc(d.action), num(d.probability, 3), num(d.agreement, 2), num(d.uncertainty, 3), num(d.target_position, 4),
        (models.get(d.symbol + "|" + d.open_time) || []).map((m) => "<span class=model>" + esc(m.model) + " " +
          num(m.probability, 3) + (m.weight !== null ? " w" + num(m.weight, 2) : "") + "</span>").join(" · ")]));
  }
  function health() {
    const h = dash.values.health, b = dash.values.budget, br = dash.values.breaker;
    const rows = [];
    if (h) {
      rows.push(["status", "<span class=" + (h.status === "ok" ? "ok" : "bad") + ">" + esc(h.status) + "</span>"]);
      for (const r of h.reasons || []) rows.push(["reason", esc(r)]);
      rows.push(["last bar age", h.last_bar_age_s === null ? "" : esc(h.last_bar_age_s) + " s"]);
      rows.push(["reconnects", esc(h.reconnects)]);
      rows.push(["rejected frames", esc(Object.entries(h.rejected || {}).map(([k, v]) => k + " " + v).join(", ") || "0")]);
    } else if ((dash.values.run || {}).replay) rows.push(["run", "finished: replay from the run log"]);
    if (br) rows.push(["breaker", br.tripped ? "<span class=bad>tripped</span>" : "ok"]);
    if (b) { rows.push(["weight used", esc(b.weight_used)]);
      for (const [k, v] of Object.entries(b.left || {})) rows.push(["budget " + esc(k), esc(v)]); }
    table($("health"), ["", ""], rows);
  }
  $("symbol").addEventListener("change", schedule);

  // ------------------------------------------------------------------ replay slider
  function setupSlider() {
    const run = dash.values.run || {};
    if (!run.replay) { dash.cursor = null; return; }
    $("replay").style.display = "flex";
    const eq = dash.streams.equity;
    const s = $("slider");
    s.max = String(Math.max(eq.length - 1, 0));
    if (dash.cursor === null) s.value = s.max;
    const move = () => { const p = eq[Number(s.value)]; dash.cursor = p ? p[0] : null;
      $("cursor").textContent = p ? new Date(p[0]).toISOString().slice(0, 16).replace("T", " ") : ""; schedule(); };
    s.oninput = move; move();
  }

  // ------------------------------------------------------------------ socket
  function apply(msg) {
    dash.messages++;
    if (msg.type === "snapshot") { dash.snapshots++; for (const s of STREAMS) dash.streams[s] = []; dash.values = {}; }
    for (const s of msg.reset || []) dash.streams[s] = [];
    for (const [s, items] of Object.entries(msg.append || {})) {
      const a = dash.streams[s]; for (const it of items) a.push(it);
    }
    Object.assign(dash.values, msg.set || {});
    if (msg.type === "snapshot") {
      setupSlider();
      $("conn").textContent = (dash.values.run || {}).replay ? "connected: replay" : "live";
    }
    schedule();
  }
  let delay = 250;
  function connect() {
    const token = new URLSearchParams(location.search).get("token");
    const base = location.pathname.replace(/[^/]*$/, "");
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + base + "ws" +
      (token ? "?token=" + encodeURIComponent(token) : "");
    const ws = new WebSocket(url);
    dash.ws = ws;
    ws.onopen = () => { dash.connected = true; delay = 250; $("conn").textContent = (dash.values.run || {}).replay ? "connected" : "live"; $("conn").className = "up"; };
    ws.onmessage = (e) => apply(JSON.parse(e.data));
    ws.onclose = () => {
      if (dash.connected) dash.drops = (dash.drops || 0) + 1;
      dash.connected = false;
      $("conn").textContent = "disconnected: reconnecting"; $("conn").className = "down";
      setTimeout(connect, delay); delay = Math.min(delay * 2, 5000);
    };
  }
  connect();
})();
