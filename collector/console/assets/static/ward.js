// Ward console: live updates for the events list. No framework, no inline script (the CSP
// forbids it), nothing fetched from outside the console's own origin.

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? '';

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text ?? '';
  return td;
}

function eventRow(e) {
  const tr = document.createElement('tr');
  tr.dataset.rowid = String(e.rowid);
  tr.className = `sev-${e.severity} fresh`;
  const first = document.createElement('td');
  const a = document.createElement('a');
  a.href = `/events/${e.rowid}`;
  a.textContent = e.time.replace('T', ' ').replace(/\..*|Z$/, '');
  first.append(a);
  tr.append(first, cell(e.severity), cell(e.data_class), cell(e.host), cell(e.user), cell(e.process),
    cell(e.target), cell(e.app_name), cell(e.action), cell(e.rule), cell(e.status));
  tr.children[6].className = 'path';
  return tr;
}

// pollEvents asks for events newer than the newest shown, with the page's filters, every
// few seconds, and puts them at the top.
function pollEvents() {
  const live = document.getElementById('live');
  const body = document.querySelector('#events tbody');
  if (!live || !body) return;
  let newest = Number(live.dataset.newest || '0');
  const params = new URLSearchParams(live.dataset.query || '');
  const tick = async () => {
    params.set('after', String(newest));
    try {
      const res = await fetch(`/api/v1/events?${params}`, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
      if (res.status === 401) { live.textContent = 'Session ended: reload to sign in again.'; return; }
      if (res.ok) {
        const data = await res.json();
        const fresh = data.events.filter((e) => e.rowid > newest).sort((a, b) => a.rowid - b.rowid);
        for (const e of fresh) {
          body.querySelector('tr.empty')?.remove();
          body.prepend(eventRow(e));
          newest = Math.max(newest, e.rowid);
        }
        live.textContent = `Live: updated ${new Date().toLocaleTimeString()}`;
      }
    } catch (err) {
      live.textContent = 'Live updates paused (collector unreachable).';
    }
    setTimeout(tick, 5000);
  };
  setTimeout(tick, 5000);
}

document.addEventListener('DOMContentLoaded', () => {
  if (document.body.dataset.page === 'events') pollEvents();
  // Keep the CSRF token available to scripts that post with fetch.
  window.wardCSRF = csrf;
});
