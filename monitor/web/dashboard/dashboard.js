// liqmon dashboard: one page, no dependencies, fed by the monitor's /ws live feed.
// The server sends a hello, then a snapshot about every second (the closest
// positions for this page's filter, per-symbol prices and feed state, totals)
// and throttled batches of events. The page only renders what it receives.
"use strict";

(() => {
  const MAX_EVENTS = 200;
  const NUMERIC = new Set([
    "qty",
    "notional",
    "margin",
    "mark_price",
    "liquidation_price",
    "distance_pct",
    "margin_ratio",
  ]);
  // Status: a colour, and for readers who cannot tell the colours apart, a shape and a word.
  const STATUS = {
    healthy: ["●", "healthy", "margin ratio below the margin-call level"],
    margin_call: ["▲", "margin call", "margin ratio at or above the margin-call level"],
    liquidated: ["✖", "liquidated", "margin balance reached the maintenance margin"],
    closed: ["○", "closed", "size zero: nothing at risk"],
  };

  const state = {
    symbols: [],
    contracts: {},
    units: {},
    history: {},
    historyPoints: 300,
    historyIntervalMs: 1000,
    cards: {},
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

  // Times are shown in the browser's own time zone, named in the header.
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const pad = (n, width = 2) => String(n).padStart(width, "0");

  function utcOffset(date) {
    const minutes = -date.getTimezoneOffset();
    const sign = minutes < 0 ? "−" : "+";
    const abs = Math.abs(minutes);
    return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtStamp(ms) {
    const d = new Date(ms);
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return `${day} ${fmtTime(ms)}.${pad(d.getMilliseconds(), 3)} ${utcOffset(d)} (${ZONE})`;
  }

  // Notional and margin: whole units from 10,000 up, two decimals from 100, else five
  // significant digits (a coin-margined 0.0094408 BTC); the exact value is in the title.
  function fmtValue(value) {
    if (value === null || value === undefined) return "–";
    const n = Number(value);
    if (!Number.isFinite(n)) return String(value);
    const abs = Math.abs(n);
    if (abs >= 100) return n.toLocaleString("en-US", { maximumFractionDigits: abs >= 10000 ? 0 : 2 });
    return n.toLocaleString("en-US", { maximumSignificantDigits: 5 });
  }

  function withUnit(text, unit) {
    const cell = el("td", "num", text);
    if (unit && text !== "–") cell.appendChild(el("span", "unit", ` ${unit}`));
    return cell;
  }

  function statusBadge(status) {
    const [glyph, label, meaning] = STATUS[status] || ["?", String(status).replaceAll("_", " "), ""];
    const badge = el("span", `status-badge st-${status}`);
    badge.appendChild(el("span", "glyph", glyph));
    badge.appendChild(document.createTextNode(` ${label}`));
    badge.title = meaning;
    return badge;
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
    state.historyPoints = hello.history_points || state.historyPoints;
    state.historyIntervalMs = (hello.history_interval_s || 1) * 1000;
    const select = $("f-symbol");
    const chosen = select.value;
    select.replaceChildren(el("option", null, "all"));
    select.firstChild.value = "";
    for (const item of hello.symbols) {
      state.contracts[item.symbol] = item.contract;
      state.units[item.symbol] = item.units || { size: "", value: "", contract: "" };
      const option = el("option", null, item.symbol);
      option.value = item.symbol;
      select.appendChild(option);
    }
    select.value = chosen;
    mapSymbols(state.symbols);
    // The server keeps the last minutes of every chart: a page that opens shows them at once.
    for (const [symbol, points] of Object.entries(hello.history || {})) {
      state.history[symbol] = points.slice(-state.historyPoints);
    }
  }

  function onSnapshot(snapshot) {
    state.rows = snapshot.positions;
    renderPositions(snapshot);
    renderSymbols(snapshot.symbols, snapshot.ts);
    renderTotals(snapshot.totals);
    mapMarks(snapshot.symbols);
    const updated = $("updated");
    updated.textContent = `updated ${fmtTime(snapshot.ts)}`;
    updated.title = fmtStamp(snapshot.ts);
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
      const units = state.units[p.symbol] || {};
      const tr = el("tr", p.status);
      tr.dataset.id = p.id;
      tr.appendChild(el("td", null, p.id));
      tr.appendChild(el("td", null, p.account));
      tr.appendChild(el("td", null, p.symbol));
      tr.appendChild(el("td", `side-${p.side}`, p.side));
      const size = withUnit(fmtQty(p.qty), units.size);
      size.title = units.contract || `${p.qty} ${units.size || ""}`.trim();
      tr.appendChild(size);
      const notional = withUnit(fmtValue(p.notional), units.value);
      notional.dataset.exact = p.notional ?? "";
      notional.title = p.notional === null ? "no mark yet" : `${p.notional} ${units.value} at mark ${p.mark_price}`;
      tr.appendChild(notional);
      const margin = withUnit(fmtValue(p.margin), units.value);
      margin.dataset.exact = p.margin;
      margin.title =
        p.margin_balance === null || p.margin_balance === undefined
          ? `posted margin ${p.margin} ${units.value}`
          : `posted margin ${p.margin} ${units.value}; margin balance (with unrealized PnL) ${p.margin_balance} ${units.value}`;
      tr.appendChild(margin);
      tr.appendChild(el("td", "num", fmtPrice(p.mark_price)));
      tr.appendChild(el("td", "num", fmtPrice(p.liquidation_price)));
      const d = p.distance_pct === null ? null : Number(p.distance_pct);
      const cls = d === null ? "num" : d < 1 ? "num close" : d < 3 ? "num near" : "num";
      tr.appendChild(el("td", cls, d === null ? "–" : `${d.toFixed(2)}%`));
      tr.appendChild(el("td", "num", fmtRatio(p.margin_ratio)));
      const status = el("td", "status");
      status.appendChild(statusBadge(p.status));
      tr.appendChild(status);
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

  // A price chart with its scale: price gridlines labelled on the right, a
  // time axis in local clock time, the mark as a line and the index dashed,
  // over the server's history window (five minutes) ending now. A line breaks
  // where points are missing (the feed was stale).

  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHART_HEIGHT = 132;
  const PAD = { left: 4, right: 62, top: 8, bottom: 18 };

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (raw <= factor * power) return factor * power;
    }
    return 10 * power;
  }

  // As many decimals as a scale step needs: 500 → 0, 2.5 → 1, 0.25 → 2.
  function stepDecimals(step) {
    let decimals = 0;
    while (decimals < 8 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6) {
      decimals += 1;
    }
    return decimals;
  }

  function fmtAxis(value, step) {
    const decimals = stepDecimals(step);
    return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  }

  function chart(points, width, endMs) {
    const height = CHART_HEIGHT;
    const svg = svgEl("svg", {
      class: "chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
    });
    const spanMs = state.historyPoints * state.historyIntervalMs;
    const startMs = endMs - spanMs;
    const span = `${Math.round(spanMs / 60000)} min`;
    const visible = points.filter((p) => p[0] >= startMs && p[0] <= endMs);
    svg.dataset.points = String(visible.length);
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - startMs) / spanMs) * plotW;
    svg.appendChild(svgEl("rect", { class: "plot", x: PAD.left, y: PAD.top, width: plotW, height: plotH }));

    // Time axis: a tick each whole minute (two when narrow), labelled in local time
    // unless the label would touch the plot's edge or the previous label.
    const minuteMs = 60000;
    const every = plotW < 200 ? 2 : 1;
    let labelledAt = -Infinity;
    for (let t = Math.ceil(startMs / minuteMs) * minuteMs; t <= endMs; t += minuteMs) {
      const d = new Date(t);
      if (d.getMinutes() % every) continue;
      const px = x(t);
      svg.appendChild(svgEl("line", { class: "grid", x1: px, x2: px, y1: PAD.top, y2: PAD.top + plotH }));
      if (px < PAD.left + 15 || px - labelledAt < 36) continue;
      labelledAt = px;
      const label = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      svg.appendChild(svgEl("text", { class: "x-label", x: px, y: height - 5, "text-anchor": "middle" }, label));
    }

    const values = [];
    for (const [, mark, index] of visible) {
      values.push(Number(mark));
      if (index !== null && index !== undefined) values.push(Number(index));
    }
    if (!values.length) {
      const middle = { class: "empty", x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, "text-anchor": "middle" };
      svg.appendChild(svgEl("text", middle, `no mark in the last ${span}`));
      svg.setAttribute("aria-label", `no mark in the last ${span}`);
      return svg;
    }
    let low = Math.min(...values);
    let high = Math.max(...values);
    if (high - low < Math.abs(high) * 1e-5) {
      const pad5 = Math.max(Math.abs(high) * 0.0005, 1e-8);
      low -= pad5;
      high += pad5;
    }
    const step = niceStep(high - low, 3);
    const decimals = stepDecimals(step);
    low = Number((Math.floor(low / step) * step).toFixed(decimals));
    high = Number((Math.ceil(high / step) * step).toFixed(decimals));
    const y = (v) => PAD.top + plotH - ((v - low) / (high - low)) * plotH;
    for (let n = 0, v = low; v <= high + step / 2; n += 1, v = low + n * step) {
      const py = y(v);
      svg.appendChild(svgEl("line", { class: "grid", x1: PAD.left, x2: PAD.left + plotW, y1: py, y2: py }));
      svg.appendChild(
        svgEl("text", { class: "y-label", x: width - 4, y: py + 3.5, "text-anchor": "end" }, fmtAxis(v, step)),
      );
    }
    svg.dataset.low = String(low);
    svg.dataset.high = String(high);

    const gapMs = state.historyIntervalMs * 2.5;
    const line = (pick, cls) => {
      let run = [];
      let previous = null;
      const flush = () => {
        if (run.length > 1) svg.appendChild(svgEl("polyline", { class: cls, points: run.join(" ") }));
        if (run.length === 1 && pick === 1) {
          const [cx, cy] = run[0].split(",");
          svg.appendChild(svgEl("circle", { class: "mark-dot lone", cx, cy, r: 1.5 }));
        }
        run = [];
      };
      for (const p of visible) {
        if (p[pick] === null || p[pick] === undefined) continue;
        if (previous !== null && p[0] - previous > gapMs) flush();
        run.push(`${x(p[0]).toFixed(1)},${y(Number(p[pick])).toFixed(1)}`);
        previous = p[0];
      }
      flush();
    };
    line(2, "index-line");
    line(1, "mark-line");
    const last = visible[visible.length - 1];
    svg.appendChild(svgEl("circle", { class: "mark-dot", cx: x(last[0]), cy: y(Number(last[1])), r: 2.5 }));
    svg.setAttribute(
      "aria-label",
      `mark between ${fmtAxis(low, step)} and ${fmtAxis(high, step)} over the last ${span}`,
    );
    return svg;
  }

  function symbolCard(symbol) {
    const card = el("div", "symbol");
    card.dataset.symbol = symbol;
    const head = el("div", "row");
    const name = el("span", "name", symbol);
    name.appendChild(el("span", "kind", ""));
    head.appendChild(name);
    head.appendChild(el("span", "badge", ""));
    card.appendChild(head);
    const prices = el("div", "row");
    prices.appendChild(el("span", "mark", ""));
    prices.appendChild(el("span", "index", ""));
    card.appendChild(prices);
    const feed = el("div", "row feed");
    feed.appendChild(el("span", "source", ""));
    feed.appendChild(el("span", "dev", ""));
    card.appendChild(feed);
    card.appendChild(el("div", "chart-host"));
    const legend = el("div", "legend");
    for (const [cls, text] of [["key-mark", "mark"], ["key-index", "index"]]) {
      const key = el("span", cls);
      key.appendChild(el("span", "swatch"));
      key.appendChild(document.createTextNode(text));
      legend.appendChild(key);
    }
    legend.appendChild(el("span", "window", ""));
    card.appendChild(legend);
    return card;
  }

  function renderSymbols(symbols, endMs) {
    const host = $("symbols");
    const order = symbols.map((s) => s.symbol).join(" ");
    if (host.dataset.order !== order) {
      state.cards = {};
      for (const s of symbols) state.cards[s.symbol] = symbolCard(s.symbol);
      host.replaceChildren(...symbols.map((s) => state.cards[s.symbol]));
      host.dataset.order = order;
    }
    for (const s of symbols) {
      const history = state.history[s.symbol] || (state.history[s.symbol] = []);
      const last = history[history.length - 1];
      if (s.point && (!last || s.point[0] > last[0])) {
        history.push(s.point);
        if (history.length > state.historyPoints) history.splice(0, history.length - state.historyPoints);
      }
      const card = state.cards[s.symbol];
      const units = state.units[s.symbol] || {};
      card.querySelector(".kind").textContent = ` ${s.contract}`;
      card.querySelector(".kind").title =
        s.contract === "inverse"
          ? `sizes in contracts (${units.contract}); notional and margin in ${units.value}`
          : `sizes in ${units.size}; notional and margin in ${units.value}`;
      const [cls, text] = feedBadge(s.feed, s.mark !== null);
      const badge = card.querySelector(".badge");
      badge.className = `badge ${cls}`;
      badge.textContent = text;
      card.querySelector(".mark").textContent = fmtPrice(s.mark);
      card.querySelector(".index").textContent = `index ${fmtPrice(s.index)}`;
      const age = s.feed.age_s === null ? "–" : `${s.feed.age_s.toFixed(1)} s`;
      card.querySelector(".source").textContent = `feed ${s.feed.source || "–"} · age ${age}`;
      const deviation = s.feed.deviation === null ? "–" : `${(Number(s.feed.deviation) * 100).toFixed(2)}%`;
      card.querySelector(".dev").textContent = `dev ${deviation}`;
      const chartHost = card.querySelector(".chart-host");
      const width = Math.max(Math.floor(chartHost.clientWidth), 160);
      chartHost.replaceChildren(chart(history, width, endMs));
      const minutes = (state.historyPoints * state.historyIntervalMs) / 60000;
      const windowNote = card.querySelector(".window");
      windowNote.textContent = `${units.price || "price"} · last ${minutes} min`;
      windowNote.title = `one point every ${state.historyIntervalMs / 1000} s, kept by the monitor since it started`;
    }
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
      const window = latency.window === "last_minute" ? "last minute" : "since start";
      $("t-latency").textContent = `p50 ≤ ${latency.p50_le_ms} ms`;
      $("t-latency-detail").textContent =
        `p99 ≤ ${latency.p99_le_ms ?? "∞"} ms · mean ${latency.mean_ms} ms · ${fmtInt(latency.count)} marks, ${window}`;
    } else {
      $("t-latency").textContent = "–";
      $("t-latency-detail").textContent = "no mark evaluated yet";
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
    const time = el("span", "time", fmtTime(event.published_at));
    time.title = `published ${fmtStamp(event.published_at)}`;
    li.dataset.publishedAt = String(event.published_at);
    li.appendChild(time);
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

  // -- liquidation map and stress --
  // Asked of /api/liquidation-map and /api/stress (the token rides along) for the
  // symbol chosen here: the map around the symbol's mark (known from the live
  // feed), again every MAP_REFRESH_MS while the page is visible. The figures are
  // the API's exact strings (kept in data-exact); the page only formats them.

  const MAP_REFRESH_MS = 10000;
  const MAP_BUCKETS = 100;
  const MAP_HEIGHT = 220;
  const MAP_PAD = { left: 4, right: 70, top: 10, bottom: 18 };
  const risk = { symbol: "", marks: {}, request: 0, stressRequest: 0, asked: null, map: null, stress: null };

  // An API answer's document, or an Error carrying the API's own message.
  async function apiGet(path) {
    const response = await fetch(`${path}${tokenQuery("&")}`);
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
    return body;
  }

  function fmtCompact(value) {
    return value.toLocaleString("en-US", { notation: "compact", maximumFractionDigits: 2 });
  }

  // ±percent around the mark in about MAP_BUCKETS buckets of the round width nearest, as the
  // decimal strings the API takes (no exponent).
  function mapRange(mark, percent) {
    const raw = (mark * percent) / 50 / MAP_BUCKETS;
    const power = 10 ** Math.floor(Math.log10(raw));
    const nearest = (a, b) => (Math.abs(Math.log(a / raw)) <= Math.abs(Math.log(b / raw)) ? a : b);
    const step = [1, 2, 2.5, 5, 10].map((factor) => factor * power).reduce(nearest);
    const decimals = stepDecimals(step);
    const low = Math.max(Math.floor((mark * (1 - percent / 100)) / step) * step, step);
    const high = Math.ceil((mark * (1 + percent / 100)) / step) * step;
    return { low: low.toFixed(decimals), high: high.toFixed(decimals), step: step.toFixed(decimals) };
  }

  async function loadMap() {
    const symbol = risk.symbol;
    const mark = risk.marks[symbol];
    if (!symbol) return;
    if (mark === null || mark === undefined) {
      $("map-host").replaceChildren();
      $("map-note").textContent = `no mark for ${symbol} yet: the map is drawn around the mark`;
      return;
    }
    risk.asked = symbol;
    const range = mapRange(Number(mark), Number($("m-range").value));
    const request = ++risk.request;
    const { low, high, step } = range;
    const query = `symbol=${encodeURIComponent(symbol)}&low=${low}&high=${high}&step=${step}`;
    try {
      const map = await apiGet(`/api/liquidation-map?${query}`);
      if (request !== risk.request) return;
      risk.map = map;
      drawMap();
    } catch (error) {
      if (request === risk.request) $("map-note").textContent = `map: ${error.message}`;
    }
  }

  function drawMap() {
    const map = risk.map;
    if (!map || map.symbol !== risk.symbol) return;
    const host = $("map-host");
    host.replaceChildren(mapChart(map, Math.max(Math.floor(host.clientWidth), 240)));
    const unit = (state.units[map.symbol] || {}).value || "";
    $("map-note").textContent =
      `${map.symbol}: ${map.buckets.length} buckets of ${fmtPrice(map.step)} from ` +
      `${fmtPrice(map.low)} to ${fmtPrice(map.high)} · notional in ${unit} at each ` +
      `liquidation price · ${fmtTime(Date.now())}`;
  }

  function mapChart(map, width) {
    const height = MAP_HEIGHT;
    const viewBox = `0 0 ${width} ${height}`;
    const svg = svgEl("svg", { class: "chart map", width, height, viewBox, role: "img" });
    const plotW = width - MAP_PAD.left - MAP_PAD.right;
    const plotH = height - MAP_PAD.top - MAP_PAD.bottom;
    const [left, right, top, bottom] = [MAP_PAD.left, MAP_PAD.left + plotW, MAP_PAD.top, MAP_PAD.top + plotH];
    const low = Number(map.low);
    const high = Number(map.high);
    const x = (p) => left + ((p - low) / (high - low)) * plotW;
    svg.appendChild(svgEl("rect", { class: "plot", x: left, y: top, width: plotW, height: plotH }));
    // Longs: what liquidates if the price falls to a bucket's low; shorts: if it rises to its high.
    const longs = map.buckets.map((b) => [Number(b.low), Number(b.long_cumulative)]);
    const shorts = map.buckets.map((b) => [Number(b.high), Number(b.short_cumulative)]);
    const most = Math.max(0, ...longs.map((p) => p[1]), ...shorts.map((p) => p[1])) || 1;
    const yStep = niceStep(most, 4);
    const yTop = Math.ceil(most / yStep) * yStep;
    const y = (v) => bottom - (v / yTop) * plotH;
    for (let n = 0; n * yStep <= yTop + yStep / 2; n += 1) {
      const py = y(n * yStep);
      svg.appendChild(svgEl("line", { class: "grid", x1: left, x2: right, y1: py, y2: py }));
      const label = { class: "y-label", x: width - 4, y: py + 3.5, "text-anchor": "end" };
      svg.appendChild(svgEl("text", label, fmtCompact(n * yStep)));
    }
    const xStep = niceStep(high - low, plotW < 500 ? 4 : 8);
    for (let v = Math.ceil(low / xStep) * xStep; v < high; v += xStep) {
      const px = x(v);
      svg.appendChild(svgEl("line", { class: "grid", x1: px, x2: px, y1: top, y2: bottom }));
      if (px < left + 20 || px > right - 20) continue;
      const label = { class: "x-label", x: px, y: height - 4, "text-anchor": "middle" };
      svg.appendChild(svgEl("text", label, fmtAxis(v, xStep)));
    }
    for (const [points, side] of [[longs, "cum-long"], [shorts, "cum-short"]]) {
      const line = points.map(([p, v]) => `${x(p).toFixed(1)},${y(v).toFixed(1)}`);
      const base = (p) => `${x(p).toFixed(1)},${y(0).toFixed(1)}`;
      const area = [base(points[0][0]), ...line, base(points[points.length - 1][0])];
      svg.appendChild(svgEl("polygon", { class: `${side} area`, points: area.join(" ") }));
      const curve = svgEl("polyline", { class: `${side} curve`, points: line.join(" ") });
      curve.dataset.points = String(points.length);
      svg.appendChild(curve);
    }
    const vertical = (price, cls) => {
      const p = Number(price);
      if (!(p >= low && p <= high)) return;
      svg.appendChild(svgEl("line", { class: cls, x1: x(p), x2: x(p), y1: top, y2: bottom }));
    };
    vertical(map.mark, "map-mark");
    if (risk.stress && risk.stress.symbol === map.symbol) vertical(risk.stress.price, "stress-line");
    const first = map.buckets[0];
    const last = map.buckets[map.buckets.length - 1];
    Object.assign(svg.dataset, {
      symbol: map.symbol,
      mark: map.mark ?? "",
      low: map.low,
      high: map.high,
      step: map.step,
      buckets: String(map.buckets.length),
      longs: first.long_cumulative,
      shorts: last.short_cumulative,
    });
    // A click on the plot stresses at the price under the pointer (typing one does the same).
    svg.addEventListener("click", (event) => {
      const px = event.clientX - svg.getBoundingClientRect().left;
      if (px < left || px > right) return;
      const price = low + ((px - left) / plotW) * (high - low);
      document.querySelector("input[name=stress-kind][value=price]").checked = true;
      onStressKind();
      $("s-value").value = price.toFixed(stepDecimals(Number(map.step)));
      $("stress-form").requestSubmit();
    });
    svg.appendChild(svgEl("title", {}, "click to stress at that price"));
    const unit = (state.units[map.symbol] || {}).value || "";
    svg.setAttribute(
      "aria-label",
      `${map.symbol} liquidation map, mark ${fmtPrice(map.mark)}: ` +
        `${fmtValue(first.long_cumulative)} ${unit} of longs liquidate if the price falls to ` +
        `${fmtPrice(map.low)}, ${fmtValue(last.short_cumulative)} ${unit} of shorts if it rises to ` +
        `${fmtPrice(map.high)}`,
    );
    return svg;
  }

  // "-10" (per cent) as "-0.10": the decimal point moved in the text, not through a
  // float. Anything else goes to the API as typed, whose message then says what is wrong.
  function fraction(percent) {
    const m = /^([+-]?)(\d+)(?:\.(\d*))?$/.exec(percent);
    if (!m) return percent;
    const digits = m[2].padStart(3, "0");
    const whole = digits.slice(0, -2).replace(/^0+(?=\d)/, "");
    return `${m[1] === "-" ? "-" : ""}${whole}.${digits.slice(-2)}${m[3] || ""}`;
  }

  function stressKind() {
    return document.querySelector("input[name=stress-kind]:checked").value;
  }

  function onStressKind() {
    const move = stressKind() === "move";
    $("s-value-label").textContent = move ? "move (%)" : "price";
    $("s-value").placeholder = move ? "e.g. -10" : "e.g. 57600";
  }

  function showStressError(message) {
    $("stress-error").textContent = message;
    $("stress-result").hidden = true;
    risk.stress = null;
    drawMap();
  }

  async function runStress(event) {
    event.preventDefault();
    const symbol = risk.symbol;
    const text = $("s-value").value.trim();
    if (!symbol) return;
    const move = stressKind() === "move";
    if (!text) {
      showStressError(move ? "type a move in per cent (-10: ten per cent down)" : "type a price");
      return;
    }
    const param = move ? `move=${encodeURIComponent(fraction(text))}` : `price=${encodeURIComponent(text)}`;
    const request = ++risk.stressRequest;
    try {
      const body = await apiGet(`/api/stress?symbol=${encodeURIComponent(symbol)}&${param}`);
      if (request === risk.stressRequest && symbol === risk.symbol) showStress(body.stress[0]);
    } catch (error) {
      if (request === risk.stressRequest) showStressError(error.message);
    }
  }

  function showStress(stress) {
    const unit = (state.units[stress.symbol] || {}).value || "";
    const figure = (id, exact, text) => {
      const node = $(id);
      node.dataset.exact = String(exact);
      node.title = String(exact);
      node.replaceChildren(document.createTextNode(text));
      if (unit && typeof exact === "string") node.appendChild(el("span", "unit", ` ${unit}`));
    };
    const { liquidated, margin_call: called } = stress;
    figure("s-liquidated-count", liquidated.count, fmtInt(liquidated.count));
    figure("s-liquidated-notional", liquidated.notional, fmtValue(liquidated.notional));
    figure("s-liquidated-margin", liquidated.margin, fmtValue(liquidated.margin));
    figure("s-margin-call-count", called.count, fmtInt(called.count));
    figure("s-margin-call-notional", called.notional, fmtValue(called.notional));
    figure("s-shortfall", stress.shortfall, fmtValue(stress.shortfall));
    let headline = `${stress.symbol} at ${fmtPrice(stress.price)}`;
    if (stress.move !== null) {
      const percent = Number(stress.move) * 100;
      const shown = `${percent > 0 ? "+" : ""}${percent.toLocaleString("en-US", { maximumFractionDigits: 4 })}`;
      headline += ` (${shown} % from the mark ${fmtPrice(stress.mark)})`;
    } else if (stress.mark !== null) {
      headline += ` (mark ${fmtPrice(stress.mark)})`;
    }
    const head = $("s-headline");
    head.textContent = headline;
    head.dataset.price = stress.price;
    $("stress-error").textContent = "";
    $("stress-result").hidden = false;
    risk.stress = stress;
    drawMap();
  }

  function chooseMapSymbol(symbol) {
    if (!symbol || symbol === risk.symbol) return;
    $("m-symbol").value = symbol;
    risk.symbol = symbol;
    risk.map = null;
    risk.stress = null;
    $("stress-result").hidden = true;
    $("stress-error").textContent = "";
    $("map-host").replaceChildren();
    loadMap();
  }

  function mapSymbols(symbols) {
    const select = $("m-symbol");
    select.replaceChildren(...symbols.map((symbol) => el("option", null, symbol)));
    if (symbols.includes(risk.symbol)) select.value = risk.symbol;
    else risk.symbol = symbols[0] || "";
  }

  // The marks come with every snapshot: the first one known for the chosen symbol draws its map.
  function mapMarks(symbols) {
    for (const s of symbols) risk.marks[s.symbol] = s.mark;
    if (risk.asked !== risk.symbol) loadMap();
  }

  function startMap() {
    $("m-symbol").addEventListener("change", () => chooseMapSymbol($("m-symbol").value));
    $("f-symbol").addEventListener("change", () => chooseMapSymbol($("f-symbol").value));
    $("m-range").addEventListener("change", loadMap);
    $("map-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadMap();
    });
    $("stress-form").addEventListener("submit", runStress);
    for (const radio of document.querySelectorAll("input[name=stress-kind]")) {
      radio.addEventListener("change", onStressKind);
    }
    setInterval(() => {
      if (!document.hidden) loadMap();
    }, MAP_REFRESH_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) loadMap();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(drawMap, 200);
    });
  }

  // -- start --

  function start() {
    const now = new Date();
    const zone = $("tz");
    zone.textContent = `times in ${ZONE} (${utcOffset(now)})`;
    zone.title = "every time on this page is this browser's local time";
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
    startMap();
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
