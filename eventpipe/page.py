"""
The status page at C{/} on the metrics port: what a person opens first.
It reads C{/status} every few seconds and shows the same figures as
C{eventpipe status}, a chart of events received and delivered per second
over the last minutes, the spool against its limit, delivery with its last
error, the recent quarantine findings and any set-aside segments.

Everything is served from here (no CDN, no fonts, no outside scripts: ACM
networks are often closed), a few KiB in all.  Every figure is written with
C{textContent}, never as markup, since quarantine reasons may quote what a
sender sent; the page's Content-Security-Policy allows only its own script
and style, so injected markup could not run even if it got in.
"""

from __future__ import annotations

HEADERS = {
    b"content-security-policy": b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"cache-control": b"no-store",
    b"referrer-policy": b"no-referrer",
}

HTML = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>eventpipe</title>
<link rel="stylesheet" href="page.css">
<script src="page.js" defer></script>
</head>
<body>
<header><h1>eventpipe</h1><span id="health" class="badge">...</span>
<span id="health-because"></span></header>
<main>
<section><h2>Service</h2><dl>
<dt>State</dt><dd id="service">waiting for the first answer</dd>
<dt>Listening</dt><dd id="listening">-</dd>
<dt>Connections open</dt><dd id="connections">-</dd>
<dt>Last event</dt><dd id="last-event" class="time">-</dd>
</dl></section>
<section><h2>Since start</h2><dl>
<dt>Events received</dt><dd id="received">-</dd>
<dt>Events delivered</dt><dd id="delivered">-</dd>
<dt>Pieces quarantined</dt><dd id="quarantined">-</dd>
</dl></section>
<section><h2>Spool</h2>
<div class="bar"><div id="spool-bar"></div></div><dl>
<dt>Waiting</dt><dd id="spool">-</dd>
<dt>Segments waiting</dt><dd id="segments">-</dd>
<dt>Oldest event</dt><dd id="oldest">-</dd>
<dt>Reading</dt><dd id="reading">-</dd>
</dl></section>
<section id="delivery-card"><h2>Delivery</h2><dl>
<dt>Destination</dt><dd id="destination">-</dd>
<dt>State</dt><dd id="delivery-state">-</dd>
<dt>Attempts</dt><dd id="attempts">-</dd>
<dt>Last error</dt><dd id="last-error">-</dd>
<dt>What to do</dt><dd id="hint">-</dd>
<dt>Last delivery</dt><dd id="last-delivery" class="time">-</dd>
</dl></section>
<section class="wide"><h2>Events per second, the last 5 minutes</h2>
<div class="plot"><div class="y"><span id="chart-peak">-</span><span>0</span></div>
<svg id="chart" viewBox="0 0 600 120" preserveAspectRatio="none" role="img"
 aria-label="events received and delivered per second, the last 5 minutes">
<line class="grid" x1="0" y1="60" x2="600" y2="60"/>
<polyline id="line-received" class="received" points=""/>
<polyline id="line-delivered" class="delivered" points=""/></svg>
<div class="x"><span>5 min ago</span><span>2.5 min ago</span><span>now</span></div></div>
<p class="legend"><span class="received">received</span> <span id="rate-received">-</span>/s
&#160; <span class="delivered">delivered</span> (averaged over 30 s, as batches go
out at once) <span id="rate-delivered">-</span>/s &#160; scale: 0 to the top value,
events per second</p></section>
<section class="wide"><h2>Recent quarantine</h2>
<table><thead><tr><th>When</th><th>Pieces</th><th>Kind</th><th>Reason</th></tr></thead>
<tbody id="quarantine"></tbody></table><p id="quarantine-none">none since start</p></section>
<section class="wide"><h2>Set aside (cannot be rendered)</h2>
<ul id="set-aside"></ul><p id="set-aside-none">none</p></section>
</main>
<footer>Updated <span id="updated" class="time">never</span>; <a href="status">/status</a>
<a href="metrics">/metrics</a></footer>
</body>
</html>
"""

CSS = b"""body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center}
h1{font-size:1.2em;margin:0}h2{font-size:1em;margin:0 0 .5em}
.badge{padding:.15em .6em;border-radius:1em;background:#777;font-weight:600}
.healthy{background:#1f8a4c}.degraded{background:#c77700}.down{background:#b3261e}
main{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:1em;padding:1em}
@media (max-width:1000px){main{grid-template-columns:repeat(2,minmax(0,1fr))}}
@media (max-width:560px){main{grid-template-columns:minmax(0,1fr)}}
section{background:#fff;border-radius:6px;padding:.8em 1em;box-shadow:0 1px 2px #0002}
.wide{grid-column:1/-1}dl{display:grid;grid-template-columns:auto 1fr;gap:.2em 1em;margin:0}
dt{color:#5a6272}dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.time{white-space:nowrap;overflow-wrap:normal}
section.failing{box-shadow:inset 4px 0 0 #b3261e,0 1px 2px #0002;background:#fdf3f2}
.plot{display:grid;grid-template-columns:auto 1fr;grid-template-rows:120px auto;gap:0 .4em}
.y{display:flex;flex-direction:column;justify-content:space-between;text-align:right;
color:#5a6272;font-size:.85em;font-variant-numeric:tabular-nums}
.x{grid-column:2;display:flex;justify-content:space-between;color:#5a6272;font-size:.85em}
line.grid{stroke:#e3e5e9;stroke-width:1;vector-effect:non-scaling-stroke}
svg{width:100%;height:120px;background:#fafbfc;border:1px solid #e3e5e9}
polyline{fill:none;stroke-width:1.5;vector-effect:non-scaling-stroke}
polyline.received{stroke:#2563eb}polyline.delivered{stroke:#1f8a4c}
span.received{color:#2563eb}span.delivered{color:#1f8a4c}.legend{margin:.3em 0 0}
.bar{height:.8em;background:#e3e5e9;border-radius:.4em;overflow:hidden;margin-bottom:.5em}
#spool-bar{height:100%;width:0;background:#2563eb}#spool-bar.full{background:#b3261e}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2em .5em;
border-bottom:1px solid #e3e5e9;vertical-align:top}td:first-child{white-space:nowrap}
td:last-child{word-break:break-word}
footer{padding:0 1em 1em;color:#5a6272}
"""

JS = b"""'use strict';
const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value === null || value === undefined ? '-' : String(value); };
const EVERY = 2000;

// In the unit family of the limit the user set (1GB: GB; 1GiB: GiB).
function size(bytes, like) {
  const decimal = like && like % 1000 === 0 && like % 1024 !== 0;
  const step = decimal ? 1000 : 1024;
  const units = decimal ? ['B', 'KB', 'MB', 'GB'] : ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (bytes >= step && i < units.length - 1) { bytes /= step; i++; }
  return (i ? bytes.toFixed(1) : bytes) + ' ' + units[i];
}

function age(seconds) {
  seconds = Math.floor(seconds);
  if (seconds < 60) return seconds + 's';
  if (seconds < 3600) return Math.floor(seconds / 60) + 'm ' + (seconds % 60) + 's';
  return Math.floor(seconds / 3600) + 'h ' + Math.floor(seconds % 3600 / 60) + 'm';
}

function chart(id, rates, peak, slots) {
  const step = 600 / Math.max(1, slots - 1), first = slots - rates.length;
  $(id).setAttribute('points', rates.map((r, i) =>
    ((first + i) * step).toFixed(1) + ',' + (118 - 116 * r / peak).toFixed(1)).join(' '));
}

function rows(list, body, none, make) {
  body.replaceChildren(...list.map(make));
  none.hidden = list.length > 0;
}

function cell(value) {
  const td = document.createElement('td');
  td.textContent = String(value);
  return td;
}

function show(s) {
  const badge = $('health');
  badge.textContent = s.health;
  badge.className = 'badge ' + (s.health === 'healthy' ? 'healthy' : 'degraded');
  $('health-because').textContent = s.health_because || '';
  text('service', 'running, up ' + age(s.uptime_seconds) + ', version ' + s.version);
  text('listening', s.listening ? 'yes' : 'no');
  text('connections', s.connections_open);
  text('last-event', s.last_event_received || 'none since start');
  text('received', s.since_start.events_received);
  text('delivered', s.since_start.events_delivered);
  text('quarantined', s.since_start.pieces_quarantined);
  const spool = s.spool, share = spool.limit_bytes ? spool.waiting_bytes / spool.limit_bytes : 0;
  text('spool', size(spool.waiting_bytes, spool.limit_bytes) + ' of ' +
    size(spool.limit_bytes, spool.limit_bytes) +
    ' (' + (100 * share).toFixed(1) + '%)');
  $('spool-bar').style.width = Math.min(100, 100 * share).toFixed(1) + '%';
  $('spool-bar').className = share >= 0.9 ? 'full' : '';
  const current = spool.current_segment_events || 0;
  const sealed = spool.segments_waiting + ' sealed' + (current ? ' and the current one' : '');
  text('segments', spool.segments_waiting || spool.events_waiting ?
    sealed + ' (' + (spool.events_waiting_exact ? '' : 'at least ') + spool.events_waiting + ' events)' :
    'nothing waits');
  text('oldest', spool.segments_waiting || spool.waiting_bytes ? age(spool.oldest_event_age_seconds) + ' old' : 'nothing waits');
  text('reading', spool.reading_paused_because.length ? 'paused: ' + spool.reading_paused_because.join(', ') : 'not paused');
  text('destination', s.delivery.destination);
  text('delivery-state', s.delivery.state);
  const failing = s.delivery.state === 'failing';
  $('delivery-card').className = failing ? 'failing' : '';
  const next = s.delivery.next_attempt_in_seconds;
  text('attempts', failing ? (s.delivery.failed_attempts || 0) + ' failed since the last delivery' +
    (next === null || next === undefined ? '' : '; next in ' + age(next)) : 'no failure');
  text('last-error', s.delivery.last_error || 'none');
  text('hint', s.delivery.hint || (failing ? 'see the log' : '-'));
  text('last-delivery', s.delivery.last_delivery || 'none since start');
  rows(s.recent_quarantine || [], $('quarantine'), $('quarantine-none'), (q) => {
    const tr = document.createElement('tr');
    tr.append(cell((q.at || '').replace('T', ' ')), cell(q.pieces), cell(q.label), cell(q.reason));
    return tr;
  });
  rows(spool.segments_set_aside, $('set-aside'), $('set-aside-none'), (name) => {
    const li = document.createElement('li');
    li.textContent = name;
    return li;
  });
  text('updated', new Date().toISOString().replace('.000', ''));
}

// Batches go out all at once: delivered is shown averaged over 30 s (15
// samples of 2 s), beside received as it came.
function smooth(values, width) {
  return values.map((_, i) => {
    const run = values.slice(Math.max(0, i - width + 1), i + 1);
    return run.reduce((a, b) => a + b, 0) / run.length;
  });
}

function plot(r) {
  const received = r.received_per_second || [];
  const delivered = smooth(r.delivered_per_second || [], 15);
  const peak = Math.max(1, ...received, ...delivered);
  const slots = Math.max(r.slots || 0, received.length, 2);
  chart('line-received', received, peak, slots);
  chart('line-delivered', delivered, peak, slots);
  text('rate-received', received.length ? received[received.length - 1].toFixed(1) : '-');
  text('rate-delivered', delivered.length ? delivered[delivered.length - 1].toFixed(1) : '-');
  text('chart-peak', peak.toFixed(1));
}

async function tick() {
  try {
    const [status, rates] = await Promise.all(
      ['status', 'rates'].map((path) => fetch(path, {cache: 'no-store'}).then((a) => a.json())));
    show(status);
    plot(rates);
  } catch (error) {
    const badge = $('health');
    badge.textContent = 'down';
    badge.className = 'badge down';
    text('health-because', 'the service does not answer');
  }
}

tick();
setInterval(tick, EVERY);
"""
