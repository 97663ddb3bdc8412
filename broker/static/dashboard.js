// The Notefly dashboard: draws the operations snapshot that /dashboard/events streams.
// No library and no outside request: DOM nodes are built with textContent only
// (message titles and errors are user data), the chart is a hand-drawn SVG.
"use strict";

(function () {
  const COLORS = ["#2d5bd7", "#e67e22", "#1f8a4c", "#8e44ad", "#c0392b", "#16a085"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
    }
    return node;
  }

  function time(iso) {
    return iso ? new Date(iso).toLocaleTimeString() : "";
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function drawCounters(s) {
    const values = {
      ...s.counters,
      queued: s.work.queued,
      in_actors: s.work.in_actors,
      dead_letters: s.work.failed,
      entities: s.workers.entities ?? s.actors.entities ?? 0,
      shard_actors: s.workers.shard_actors ?? s.actors.shard_actors ?? 0,
    };
    for (const dd of document.querySelectorAll("[data-counter]")) {
      const value = values[dd.dataset.counter];
      dd.textContent = value === undefined ? "–" : String(value);
    }
  }

  // Stacked bars: one per time bucket, one colour per channel, newest on the right.
  function drawChart(t) {
    const svg = $("throughput");
    const width = 640, height = 180, pad = 24, base = height - 18;
    const channels = Object.keys(t.channels);
    const points = channels.length ? t.channels[channels[0]].length : 0;
    const stacks = Array.from({ length: points }, (_, x) =>
      channels.reduce((sum, c) => sum + t.channels[c][x], 0));
    const top = Math.max(1, ...stacks);
    const total = stacks.reduce((a, b) => a + b, 0);
    const slot = (width - pad - 4) / Math.max(1, points);
    const scale = (base - 8) / top;
    const nodes = [];
    for (const value of [0, top / 2, top]) {
      const y = base - value * scale;
      nodes.push(svgEl("line", { x1: pad, x2: width - 4, y1: y, y2: y, stroke: "#e4e7ee" }));
      const label = svgEl("text", { x: 2, y: y + 4, "font-size": 10, fill: "#6b7385" });
      label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
      nodes.push(label);
    }
    const heights = new Array(points).fill(0);
    channels.forEach((channel, i) => {
      const group = svgEl("g", { fill: COLORS[i % COLORS.length], "data-channel": channel });
      t.channels[channel].forEach((count, x) => {
        if (!count) return;
        const h = count * scale;
        heights[x] += h;
        group.append(svgEl("rect", {
          x: (pad + x * slot).toFixed(1), y: (base - heights[x]).toFixed(1),
          width: Math.max(1, slot - 1).toFixed(1), height: h.toFixed(1),
        }));
      });
      nodes.push(group);
    });
    const minutes = Math.round((points * t.bucket_seconds) / 60);
    const left = svgEl("text", { x: pad, y: height - 4, "font-size": 10, fill: "#6b7385" });
    left.textContent = `${minutes} min ago`;
    const right = svgEl("text", {
      x: width - 4, y: height - 4, "font-size": 10, fill: "#6b7385", "text-anchor": "end",
    });
    right.textContent = "now";
    nodes.push(left, right);
    svg.replaceChildren(...nodes);
    svg.dataset.total = String(total);
    $("chart-window").textContent =
      `${total} in the last ${minutes} min, ${t.bucket_seconds} s per bar`;
    fill($("legend"), channels.map((channel, i) => el("li", {},
      el("span", { style: `background:${COLORS[i % COLORS.length]}` }),
      `${channel}: ${t.channels[channel].reduce((a, b) => a + b, 0)}`)));
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function chips(counts) {
    const order = ["sent", "queued", "failed", "skipped"];
    return order.filter((k) => counts[k]).map((k) => el("span", { class: `chip ${k}` }, `${counts[k]} ${k}`));
  }

  function drawMessages(messages) {
    fill($("messages").tBodies[0], messages.map((m) => el("tr", { "data-message-id": m.id },
      el("td", {}, time(m.accepted_at)),
      el("td", {}, el("a", { href: `/messages/${encodeURIComponent(m.id)}` }, m.title || m.body.slice(0, 60))),
      el("td", {}, m.category),
      el("td", { class: "status" }, m.status),
      el("td", {}, ...chips(m.deliveries)))));
  }

  function drawFailures(failures) {
    fill($("failures").tBodies[0], failures.map((f) => {
      const button = el("button", { class: "redrive", type: "button", "data-delivery-id": f.id }, "Redrive");
      button.addEventListener("click", () => redrive(button, f.id));
      return el("tr", { "data-delivery-id": f.id },
        el("td", {}, time(f.failed_at)),
        el("td", {}, el("a", { href: `/messages/${encodeURIComponent(f.message_id)}/deliveries` }, f.id)),
        el("td", {}, f.user),
        el("td", {}, `${f.channel} (${f.provider || "?"})`),
        el("td", {}, f.attempts),
        el("td", { class: "error" }, f.error || ""),
        el("td", {}, button));
    }));
    $("no-failures").hidden = failures.length > 0;
    $("redrive-all").disabled = failures.length === 0;
  }

  function drawProviders(providers) {
    fill($("providers").tBodies[0], providers.map((p) => el("tr", { "data-provider": `${p.channel}.${p.provider}` },
      el("td", {}, p.channel),
      el("td", {}, p.provider),
      el("td", { class: `state-${p.state}` }, p.state),
      el("td", {}, p.circuit),
      el("td", {}, p.sent),
      el("td", {}, p.retried),
      el("td", {}, p.failed),
      el("td", { class: "error" }, p.last_error ? `${p.last_error} (${time(p.last_error_at)})` : ""))));
  }

  function draw(s) {
    const ready = $("ready");
    ready.textContent = s.ready ? "ready" : "not ready: " +
      s.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`).join(", ");
    ready.className = `badge ${s.ready ? "ok" : "bad"}`;
    $("node").textContent = s.node ? `node ${s.node} · v${s.version}` : `v${s.version}`;
    drawCounters(s);
    drawChart(s.throughput);
    drawProviders(s.providers);
    drawMessages(s.recent_messages);
    drawFailures(s.failures);
  }

  function notice(text, isError) {
    const box = $("notice");
    box.textContent = text;
    box.className = isError ? "notice err" : "notice";
    box.hidden = false;
  }

  async function redrive(button, id) {
    button.disabled = true;
    try {
      const response = await fetch(`/deliveries/${encodeURIComponent(id)}/retry`, { method: "POST" });
      const body = await response.json();
      if (response.ok) {
        notice(`Delivery ${id} is queued again (${body.channel} to ${body.user}).`, false);
      } else {
        notice(`Redrive of ${id} refused: ${body.error.message}`, true);
        button.disabled = false;
      }
    } catch (error) {
      notice(`Redrive of ${id} failed: ${error}`, true);
      button.disabled = false;
    }
  }

  // Every failed delivery, up to 1000 per click (POST /deliveries/redrive).
  async function redriveAll(button) {
    button.disabled = true;
    try {
      const response = await fetch("/deliveries/redrive", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      });
      const body = await response.json();
      if (response.ok) {
        const more = body.more ? "; more remain, click again" : "";
        notice(`${body.redriven} failed deliveries are queued again${more}.`, false);
      } else {
        notice(`Redrive refused: ${body.error.message}`, true);
      }
    } catch (error) {
      notice(`Redrive failed: ${error}`, true);
    }
  }
  $("redrive-all").addEventListener("click", (event) => redriveAll(event.currentTarget));

  const live = $("live");
  const source = new EventSource("/dashboard/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "badge ok"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "badge wait"; });
  source.addEventListener("snapshot", (event) => draw(JSON.parse(event.data)));
  source.addEventListener("problem", (event) => notice(JSON.parse(event.data).error, true));
})();
