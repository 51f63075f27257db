// liqmon dashboard: one page, no dependencies, fed by the monitor's /ws live feed.
// The server sends a hello, then a snapshot about every second (the closest
// positions for this page's filter, per-symbol prices and feed state, totals)
// and throttled batches of events. The page only renders what it receives.
"use strict";

(() => {
  const MAX_EVENTS = 200;
  const CHART_POINTS = 300;
  const NUMERIC = new Set(["qty", "mark_price", "liquidation_price", "distance_pct", "margin_ratio"]);

  const state = {
    symbols: [],
    contracts: {},
    history: {},
    rows: [],
    sort: { key: "distance_pct", dir: 1 },
    seen: new Set(),
    skipped: 0,
    received: 0,
    socket: null,
    retryMs: 500,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- formatting (display only; the API's values are exact decimal strings) --

  function fmtPrice(value) {
    if (value === null || value === undefined) return "–";
    const n = Number(value);
    if (!Number.isFinite(n)) return String(value);
    const abs = Math.abs(n);
    const digits = abs >= 1000 ? 2 : abs >= 1 ? 4 : 6;
    return n.toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  function fmtQty(value) {
    if (value === null || value === undefined) return "–";
    const n = Number(value);
    return Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: 8 }) : String(value);
  }

  function fmtRatio(value) {
    if (value === null || value === undefined) return "–";
    if (value === "Infinity") return "∞";
    const n = Number(value);
    return Number.isFinite(n) ? n.toFixed(3) : String(value);
  }

  function fmtInt(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    return d.toTimeString().slice(0, 8);
  }

  // -- the live feed --

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${proto}//${location.host}/ws${tokenQuery("?")}`);
    state.socket = socket;
    socket.addEventListener("open", () => {
      state.retryMs = 500;
      setConn(true);
      sendFilter();
    });
    socket.addEventListener("message", (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      state.received += 1;
      if (data.type === "hello") onHello(data);
      else if (data.type === "snapshot") onSnapshot(data);
      else if (data.type === "events") onEvents(data);
      else if (data.type === "error") $("positions-note").textContent = `server: ${data.message}`;
    });
    socket.addEventListener("close", () => {
      setConn(false);
      state.socket = null;
      setTimeout(connect, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 10000);
    });
  }

  function setConn(up) {
    const node = $("conn");
    node.className = `conn ${up ? "up" : "down"}`;
    node.textContent = up ? "live" : "reconnecting…";
  }

  function currentFilter() {
    return {
      type: "filter",
      symbol: $("f-symbol").value || null,
      account: $("f-account").value.trim() || null,
      limit: Number($("f-limit").value),
    };
  }

  function sendFilter() {
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify(currentFilter()));
    }
  }

  function onHello(hello) {
    state.symbols = hello.symbols.map((s) => s.symbol);
    const select = $("f-symbol");
    const chosen = select.value;
    select.replaceChildren(el("option", null, "all"));
    select.firstChild.value = "";
    for (const item of hello.symbols) {
      state.contracts[item.symbol] = item.contract;
      const option = el("option", null, item.symbol);
      option.value = item.symbol;
      select.appendChild(option);
    }
    select.value = chosen;
    for (const [symbol, points] of Object.entries(hello.history || {})) {
      state.history[symbol] = points.slice(-CHART_POINTS);
    }
  }

  function onSnapshot(snapshot) {
    state.rows = snapshot.positions;
    renderPositions(snapshot);
    renderSymbols(snapshot.symbols);
    renderTotals(snapshot.totals);
    $("updated").textContent = `updated ${fmtTime(snapshot.ts)}`;
  }

  // -- positions --

  function sortValue(row, key) {
    const value = row[key];
    if (value === null || value === undefined) return null;
    if (NUMERIC.has(key)) return value === "Infinity" ? Infinity : Number(value);
    return String(value);
  }

  function sortedRows() {
    const { key, dir } = state.sort;
    return state.rows.slice().sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      if (x === null && y === null) return 0;
      if (x === null) return 1; // unknowns last, whichever the direction
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }

  function renderPositions(snapshot) {
    const body = document.querySelector("#positions tbody");
    const rows = sortedRows().map((p) => {
      const tr = el("tr", p.status);
      tr.dataset.id = p.id;
      tr.appendChild(el("td", null, p.id));
      tr.appendChild(el("td", null, p.account));
      tr.appendChild(el("td", null, p.symbol));
      tr.appendChild(el("td", `side-${p.side}`, p.side));
      tr.appendChild(el("td", "num", fmtQty(p.qty)));
      tr.appendChild(el("td", "num", fmtPrice(p.mark_price)));
      tr.appendChild(el("td", "num", fmtPrice(p.liquidation_price)));
      const d = p.distance_pct === null ? null : Number(p.distance_pct);
      const cls = d === null ? "num" : d < 1 ? "num close" : d < 3 ? "num near" : "num";
      tr.appendChild(el("td", cls, d === null ? "–" : `${d.toFixed(2)}%`));
      tr.appendChild(el("td", "num", fmtRatio(p.margin_ratio)));
      tr.appendChild(el("td", `status ${p.status}`, p.status.replace("_", " ")));
      return tr;
    });
    body.replaceChildren(...rows);
    const f = snapshot.filter || {};
    const parts = [`${rows.length} closest to liquidation`];
    if (f.symbol) parts.push(`symbol ${f.symbol}`);
    if (f.account) parts.push(`account ${f.account}`);
    if (snapshot.complete === false) parts.push("search budget reached: the list may miss some matches");
    $("positions-note").textContent = parts.join(" · ");
  }

  function onSort(event) {
    const th = event.target.closest("th");
    if (!th || !th.dataset.key) return;
    const key = th.dataset.key;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    for (const header of document.querySelectorAll("#positions th")) {
      header.classList.remove("sorted", "asc", "desc");
    }
    th.classList.add("sorted", state.sort.dir > 0 ? "asc" : "desc");
    renderPositions({ filter: currentFilter(), complete: true });
  }

  // -- symbols --

  function feedBadge(feed, hasMark) {
    if (!hasMark) return ["none", "no price yet"];
    if (feed.stale) return ["stale", "stale"];
    if (feed.holding) return ["hold", "liquidations held"];
    if (feed.deviating) return ["deviation", "mark/index deviation"];
    return ["ok", "ok"];
  }

  function chart(points) {
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 240 56");
    svg.setAttribute("preserveAspectRatio", "none");
    const values = [];
    for (const [, mark, index] of points) {
      values.push(Number(mark));
      if (index !== null && index !== undefined) values.push(Number(index));
    }
    if (points.length < 2) return svg;
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (high - low < high * 1e-6) {
      low -= high * 0.0005;
      high += high * 0.0005;
    }
    const t0 = points[0][0];
    const span = Math.max(points[points.length - 1][0] - t0, 1);
    const x = (t) => (((t - t0) / span) * 238 + 1).toFixed(1);
    const y = (v) => (54 - ((v - low) / (high - low)) * 52).toFixed(1);
    const line = (pick, cls) => {
      const coords = points
        .filter((p) => p[pick] !== null && p[pick] !== undefined)
        .map((p) => `${x(p[0])},${y(Number(p[pick]))}`);
      if (coords.length < 2) return;
      const polyline = document.createElementNS(svgNS, "polyline");
      polyline.setAttribute("class", cls);
      polyline.setAttribute("points", coords.join(" "));
      svg.appendChild(polyline);
    };
    line(2, "index-line");
    line(1, "mark-line");
    return svg;
  }

  function renderSymbols(symbols) {
    const cards = symbols.map((s) => {
      const history = state.history[s.symbol] || (state.history[s.symbol] = []);
      const last = history[history.length - 1];
      if (s.point && (!last || s.point[0] > last[0])) {
        history.push(s.point);
        if (history.length > CHART_POINTS) history.splice(0, history.length - CHART_POINTS);
      }
      const card = el("div", "symbol");
      card.dataset.symbol = s.symbol;
      const head = el("div", "row");
      const name = el("span", "name", s.symbol);
      name.appendChild(el("span", "kind", ` ${s.contract}`));
      head.appendChild(name);
      const [cls, text] = feedBadge(s.feed, s.mark !== null);
      head.appendChild(el("span", `badge ${cls}`, text));
      card.appendChild(head);
      const prices = el("div", "row");
      prices.appendChild(el("span", "mark", fmtPrice(s.mark)));
      prices.appendChild(el("span", "index", `index ${fmtPrice(s.index)}`));
      card.appendChild(prices);
      const feed = el("div", "row feed");
      const age = s.feed.age_s === null ? "–" : `${s.feed.age_s.toFixed(1)} s`;
      feed.appendChild(el("span", null, `feed ${s.feed.source || "–"} · age ${age}`));
      const deviation = s.feed.deviation === null ? "–" : `${(Number(s.feed.deviation) * 100).toFixed(2)}%`;
      feed.appendChild(el("span", null, `dev ${deviation}`));
      card.appendChild(feed);
      card.appendChild(chart(history));
      return card;
    });
    $("symbols").replaceChildren(...cards);
  }

  // -- totals --

  function renderTotals(totals) {
    const p = totals.positions || {};
    $("t-monitored").textContent = fmtInt((p.healthy || 0) + (p.margin_call || 0));
    $("t-healthy").textContent = fmtInt(p.healthy || 0);
    $("t-margin-call").textContent = fmtInt(p.margin_call || 0);
    $("t-other").textContent = fmtInt(p.other || 0);
    $("t-rate").textContent = fmtInt(Math.round(totals.events_per_min || 0));
    const byType = Object.entries(totals.events_per_min_by_type || {})
      .filter(([, n]) => n > 0)
      .map(([type, n]) => `${type.replaceAll("_", " ")} ${Math.round(n)}`);
    $("t-rate-detail").textContent = byType.join(" · ");
    const latency = totals.latency;
    if (latency) {
      $("t-latency").textContent = `p50 ≤ ${latency.p50_le_ms} ms`;
      $("t-latency-detail").textContent =
        `p99 ≤ ${latency.p99_le_ms ?? "∞"} ms · mean ${latency.mean_ms} ms · ${fmtInt(latency.count)} ticks`;
    } else {
      $("t-latency").textContent = "–";
      $("t-latency-detail").textContent = "no tick evaluated yet";
    }
    $("t-outbox").textContent = fmtInt(totals.outbox);
    $("t-pages").textContent = `${totals.pages} page(s) · ${fmtInt(totals.dropped)} messages dropped`;
  }

  // -- events --

  function eventItem(event) {
    const payload = event.payload || {};
    const isAlert = !("position_id" in payload);
    const li = el("li", `${event.type}${isAlert ? " alert" : ""}`);
    li.dataset.type = event.type || "";
    li.dataset.id = event.id;
    li.appendChild(el("span", "time", fmtTime(event.published_at)));
    const what = (event.type || "event").replaceAll("_", " ");
    li.appendChild(el("span", "what", isAlert ? `${what} · ${event.symbol}` : `${what} · ${payload.symbol} ${payload.side}`));
    let info;
    if (isAlert) {
      info = Object.entries(payload.detail || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
    } else {
      info = `${payload.position_id} · ${payload.account} · mark ${fmtPrice(payload.mark_price)} · liq ${fmtPrice(payload.liquidation_price)} · ratio ${fmtRatio(payload.margin_ratio)}`;
    }
    li.appendChild(el("span", "info", info));
    return li;
  }

  function addEvents(events) {
    const list = $("events");
    const fresh = events.filter((e) => !state.seen.has(e.id));
    // Oldest first, each prepended: the newest ends up on top.
    fresh.sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const event of fresh) {
      state.seen.add(event.id);
      list.insertBefore(eventItem(event), list.firstChild);
    }
    while (list.childNodes.length > MAX_EVENTS) {
      const gone = list.lastChild;
      state.seen.delete(gone.dataset.id);
      list.removeChild(gone);
    }
    $("events-count").textContent = `${list.childNodes.length} shown`;
  }

  function onEvents(message) {
    addEvents(message.events);
    if (message.skipped) {
      state.skipped += message.skipped;
      const kinds = Object.entries(message.skipped_by_type || {})
        .map(([type, n]) => `${n} ${type.replaceAll("_", " ")}`)
        .join(", ");
      $("events-skipped").textContent =
        `${fmtInt(state.skipped)} more events not shown (throttled; last batch: ${kinds})`;
    }
  }

  async function loadRecentEvents() {
    try {
      const response = await fetch(`/api/events?limit=50${tokenQuery("&")}`);
      if (!response.ok) return;
      const body = await response.json();
      addEvents(body.events);
    } catch (error) {
      // The live feed will bring new events; nothing to show meanwhile.
    }
  }

  // -- start --

  function start() {
    document.querySelector("#positions thead").addEventListener("click", onSort);
    $("f-symbol").addEventListener("change", sendFilter);
    $("f-limit").addEventListener("change", sendFilter);
    let typing = null;
    $("f-account").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(sendFilter, 300);
    });
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      sendFilter();
    });
    loadRecentEvents();
    connect();
  }

  start();
})();

// With http.token set, open the page as /?token=...; the token rides along on
// the live feed and API requests.
function tokenQuery(separator) {
  const token = new URLSearchParams(location.search).get("token");
  return token ? `${separator}token=${encodeURIComponent(token)}` : "";
}
