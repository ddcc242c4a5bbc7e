"""The HTML gallery of one run (`image_queue report`).

One self-contained file: inline CSS and JS, no external assets, images linked by paths relative to
the report file so it works offline straight from the file system (and still works when the state
dir is copied or served as a whole). Every string from a task or an API is untrusted and escaped;
a Content-Security-Policy with a per-report nonce makes sure only our own script and style run.

Data: runs/<run_id>/batch_result.json (or, for a run still going, the index) plus each task's
index record for its prompt, provider, model, mode and size.
"""

from __future__ import annotations

import html
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from image_queue.batch import batch_row, iso
from image_queue.errors import NotFoundError, StateError
from image_queue.status import ALL_STATUSES, summarize
from image_queue.store import Store, atomic_write_bytes, read_json

OK_STATUSES = ("completed", "reused")


@dataclass(frozen=True)
class ReportInfo:
    run_id: str
    path: Path
    tasks: int
    images: int
    missing_images: int


def resolve_run_id(store: Store, run_id: str | None) -> str:
    """The given run id (checked), else the last run; NotFoundError naming near matches."""
    runs = sorted(p.name for p in store.runs_dir.iterdir()) if store.runs_dir.is_dir() else []
    if run_id in (None, "last"):
        last = store.last_run_id() or (runs[-1] if runs else None)
        if last is None:
            raise NotFoundError(f"no runs yet in {store.root}; run a batch first (image_queue run @tasks.json)")
        return last
    if run_id in runs:
        return run_id
    import difflib

    near = difflib.get_close_matches(run_id, runs, n=3, cutoff=0.5) or [r for r in runs if run_id in r][:3]
    hint = f"; did you mean: {', '.join(near)}?" if near else f"; runs: {', '.join(runs[-5:]) or 'none'}"
    raise NotFoundError(f"no run {run_id!r} in {store.root}{hint}")


def load_run(store: Store, run_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(batch_result document, task records by task_id). A live run's document is built from the index."""
    records = {r["task_id"]: r for r in store.run_tasks(run_id)}
    doc = read_json(store.run_dir(run_id) / "batch_result.json")
    if doc is None:
        request = read_json(store.run_dir(run_id) / "batch_request.json") or {}
        rows = [batch_row(r) for r in sorted(records.values(), key=lambda r: r.get("seq") or 0)]
        started = request.get("started_at")
        doc = {"run_id": run_id, "batch_name": request.get("batch_name"), "outcome": "running (not finished yet)",
               "started_at": iso(started), "finished_at": None,
               "elapsed_seconds": round(time.time() - started, 3) if started else None,
               "settings": request.get("settings", {}), "output_dir": request.get("settings", {}).get("output_dir"),
               "summary": summarize([r["status"] for r in rows]), "tasks": rows}
    return doc, records


def write_report(store: Store, run_id: str | None = None, out: str | os.PathLike[str] | None = None) -> ReportInfo:
    """Write the gallery of a run (default: the last) to `out` (default: runs/<run_id>/report.html).

    `out` may name a file, or a directory (existing, or given with a trailing slash) for report.html in it."""
    run_id = resolve_run_id(store, run_id)
    doc, records = load_run(store, run_id)
    path = Path(out) if out else store.run_dir(run_id) / "report.html"
    if path.is_dir() or str(out or "").endswith(("/", os.sep)):
        path = path / "report.html"
    path = path.absolute()
    page, images, missing = render_report(doc, records, base=path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, page.encode("utf-8"), fsync=False)
    except OSError as exc:
        raise StateError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return ReportInfo(run_id=run_id, path=path, tasks=len(doc["tasks"]), images=images, missing_images=missing)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(image_path: str, base: Path) -> str:
    rel = os.path.relpath(image_path, base)
    return quote(rel.replace(os.sep, "/"), safe="/")


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else "-"


def _card(row: dict[str, Any], record: dict[str, Any], base: Path) -> tuple[str, bool, bool]:
    """One task's card, whether it shows an image, and whether its image file is missing."""
    status = row.get("status") or "unknown"
    key = row.get("task_key") or ""
    prompt = record.get("prompt") or ""
    image = row.get("image_path")
    has_image = bool(image) and status in OK_STATUSES and os.path.isfile(image)
    missing = bool(image) and status in OK_STATUSES and not has_image
    if has_image:
        href = _e(_href(image, base))
        thumb = (f'<a class="thumb" href="{href}" target="_blank" rel="noopener">'
                 f'<img src="{href}" alt="{_e(key)}" decoding="async"></a>')
    else:
        label = "image file missing" if missing else f"no image ({status})"
        thumb = f'<div class="thumb none"><span>{_e(label)}</span></div>'
    provider, kind = record.get("provider"), record.get("provider_kind")
    if provider and kind and kind != provider:
        provider = f"{provider} ({kind})"
    model = " · ".join(str(v) for v in (provider, record.get("model"), record.get("mode")) if v)
    facts = [("provider", model or "-"), ("size", record.get("size") or "-"), ("attempts", row.get("attempts") or 0),
             ("duration", _seconds(row.get("elapsed_seconds"))), ("task", row.get("task_id"))]
    if row.get("reused_from"):
        facts.append(("reused from", row["reused_from"]))
    why = ""
    if status not in OK_STATUSES:
        human = (row.get("diagnosis") or {}).get("human_reason")
        category = (row.get("diagnosis") or {}).get("category")
        why = ('<div class="why">' + (f'<p class="human">{_e(human)}</p>' if human else "")
               + (f'<p class="category">{_e(category)}</p>' if category else "")
               + (f'<pre class="error">{_e(row.get("error"))}</pre>' if row.get("error") else "") + "</div>")
    metadata = row.get("metadata") or {}
    meta = (f'<details><summary>metadata</summary><pre>{_e(orjson.dumps(metadata, option=orjson.OPT_INDENT_2).decode())}'
            "</pre></details>") if metadata else ""
    name = row.get("task_name")
    search = " ".join(str(v) for v in (key, name, prompt, row.get("task_id")) if v).lower()
    card = (
        f'<article class="card s-{_e(status)}" data-status="{_e(status)}" data-search="{_e(search)}">{thumb}'
        f'<div class="body"><header><h2 title="{_e(key)}">{_e(key)}</h2>'
        f'<span class="badge s-{_e(status)}">{_e(status)}</span></header>'
        + (f'<p class="name">{_e(name)}</p>' if name and name != key else "")
        + f'<p class="prompt" title="{_e(prompt)}">{_e(prompt) or "<em>no prompt</em>"}</p>'
        + "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"
        + why + meta + "</div></article>"
    )
    return card, has_image, missing


def render_report(doc: dict[str, Any], records: dict[str, dict[str, Any]], *, base: Path) -> tuple[str, int, int]:
    """(the page, images shown, images missing)."""
    nonce = secrets.token_urlsafe(16)
    cards, images, missing = [], 0, 0
    for row in doc["tasks"]:
        card, shown, gone = _card(row, records.get(row.get("task_id") or "", {}), base)
        cards.append(card)
        images += shown
        missing += gone
    summary = doc.get("summary") or {}
    counts = [(s, summary.get(s, 0)) for s in ALL_STATUSES if summary.get(s)]
    buttons = [f'<button type="button" data-filter="all" class="active">all <b>{len(doc["tasks"])}</b></button>'] + [
        f'<button type="button" data-filter="{_e(s)}" class="s-{_e(s)}">{_e(s)} <b>{n}</b></button>' for s, n in counts]
    settings = doc.get("settings") or {}
    facts = [("run", doc.get("run_id")), ("outcome", doc.get("outcome")), ("started", doc.get("started_at")),
             ("finished", doc.get("finished_at") or "-"), ("elapsed", _seconds(doc.get("elapsed_seconds"))),
             ("tasks", summary.get("total", len(doc["tasks"]))), ("images", images),
             ("workers", settings.get("max_workers")), ("timeout", _seconds(settings.get("task_timeout_seconds"))),
             ("output dir", doc.get("output_dir"))]
    ok = bool(summary.get("ok"))
    title = doc.get("batch_name") or doc.get("run_id")
    csp = (f"default-src 'none'; img-src 'self' file: data:; style-src 'nonce-{nonce}'; "
           f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'")
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="image_queue report">
<title>{_e(title)} — image_queue report</title>
<style nonce="{nonce}">{CSS}</style>
</head>
<body data-images-expected="{images}" data-images-missing="{missing}">
<header class="top">
<h1>{_e(title)} <small>{_e(doc.get("run_id"))}</small></h1>
<p class="verdict {'ok' if ok else 'bad'}">{'every task completed or reused' if ok else 'not every task ended ok'}</p>
<dl class="facts">{''.join(f'<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>' for k, v in facts)}</dl>
<nav class="filters" aria-label="filter by status">{''.join(buttons)}
<input type="search" id="q" placeholder="filter by key or prompt" aria-label="filter by key or prompt">
<span class="shown"><b id="shown">{len(doc["tasks"])}</b> shown</span></nav>
{f'<p class="warn">{missing} image file(s) listed in the run no longer exist.</p>' if missing else ''}
</header>
<main class="grid">
{chr(10).join(cards)}
</main>
<footer>Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} by image_queue report. Images are linked relative to this file.</footer>
<script nonce="{nonce}">{JS}</script>
</body>
</html>
"""
    return page, images, missing


CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mut:#57606a;--bg:#f6f8fa;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:var(--bg)}
.top{padding:16px 24px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:1}
h1{margin:0 0 4px;font-size:20px}h1 small{font-weight:400;color:var(--mut);font-size:13px;margin-left:8px}
.verdict{margin:0 0 8px;font-weight:600}.verdict.ok{color:var(--ok)}.verdict.bad{color:var(--bad)}
.facts{display:flex;flex-wrap:wrap;gap:4px 20px;margin:0 0 10px}.facts div{display:flex;gap:6px}
.facts dt{color:var(--mut)}.facts dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.filters{display:flex;flex-wrap:wrap;gap:6px;align-items:center}
.filters button{border:1px solid var(--line);background:#fff;border-radius:14px;padding:3px 10px;cursor:pointer;font:inherit}
.filters button.active{background:#1f2328;color:#fff;border-color:#1f2328}
.filters input{margin-left:8px;padding:4px 8px;border:1px solid var(--line);border-radius:6px;min-width:220px;font:inherit}
.shown{color:var(--mut);margin-left:6px}.warn{color:var(--warn);margin:8px 0 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:16px;padding:20px 24px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;overflow:hidden;display:flex;flex-direction:column}
.card[hidden]{display:none}
.card.s-failed,.card.s-timed_out,.card.s-rejected,.card.s-orphaned,.card.s-orphan_late_output{border-color:#ffb3b8}
.thumb{display:block;background:#eaeef2;position:relative}
.thumb img{display:block;width:100%;height:auto;aspect-ratio:1/1;object-fit:contain}
.thumb.none{aspect-ratio:1/1;display:flex;align-items:center;justify-content:center;color:var(--mut);font-size:13px;
 background:repeating-linear-gradient(45deg,#f3f4f6,#f3f4f6 10px,#eaeef2 10px,#eaeef2 20px)}
.card.broken .thumb::after{content:"image could not be loaded";position:absolute;inset:0;display:flex;align-items:center;
 justify-content:center;background:#fff0f0;color:var(--bad)}
.body{padding:10px 12px 12px}
.body header{display:flex;gap:8px;align-items:baseline;justify-content:space-between}
h2{font-size:14px;margin:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;background:#eaeef2;white-space:nowrap}
.badge.s-completed,.badge.s-reused{background:#dafbe1;color:var(--ok)}
.badge.s-failed,.badge.s-timed_out,.badge.s-rejected,.badge.s-orphaned,.badge.s-orphan_late_output{background:#ffebe9;color:var(--bad)}
.badge.s-cancelled,.badge.s-skipped{background:#fff8c5;color:var(--warn)}
.name{margin:2px 0 0;color:var(--mut);font-size:12px}
.prompt{margin:6px 0;display:-webkit-box;-webkit-line-clamp:4;-webkit-box-orient:vertical;overflow:hidden;white-space:pre-wrap}
dl{display:grid;grid-template-columns:auto 1fr;gap:1px 10px;margin:6px 0 0;font-size:12px}
dt{color:var(--mut)}dd{margin:0;overflow-wrap:anywhere}
.why{margin-top:8px;padding:8px;background:#fff5f5;border-radius:6px}
.why .human{margin:0;font-weight:600;color:var(--bad)}.why .category{margin:2px 0 0;color:var(--mut);font-size:12px}
.why .error{margin:4px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;max-height:9em;overflow:auto}
details{margin-top:6px;font-size:12px}details pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:4px 0 0}
footer{padding:8px 24px 24px;color:var(--mut);font-size:12px}
"""

JS = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var buttons = Array.prototype.slice.call(document.querySelectorAll('.filters button'));
  var search = document.getElementById('q');
  var shown = document.getElementById('shown');
  var status = 'all';
  function apply() {
    var q = search.value.trim().toLowerCase(), n = 0;
    cards.forEach(function (c) {
      var on = (status === 'all' || c.getAttribute('data-status') === status) &&
               (!q || c.getAttribute('data-search').indexOf(q) !== -1);
      c.hidden = !on;
      if (on) { n++; }
    });
    shown.textContent = String(n);
  }
  function choose(value) {
    status = value;
    buttons.forEach(function (b) { b.classList.toggle('active', b.getAttribute('data-filter') === value); });
    apply();
  }
  buttons.forEach(function (b) {
    b.addEventListener('click', function () {
      var value = b.getAttribute('data-filter');
      try { history.replaceState(null, '', value === 'all' ? '#' : '#status=' + value); } catch (e) { /* file:// */ }
      choose(value);
    });
  });
  search.addEventListener('input', apply);
  var m = /status=([a-z_]+)/.exec(location.hash);
  if (m) { choose(m[1]); }
  window.addEventListener('load', function () {
    var ok = 0, broken = 0;
    Array.prototype.forEach.call(document.images, function (img) {
      if (img.complete && img.naturalWidth > 0) { ok++; } else {
        broken++;
        var card = img.closest('.card');
        if (card) { card.classList.add('broken'); }
      }
    });
    document.body.setAttribute('data-images-loaded', String(ok));
    document.body.setAttribute('data-images-broken', String(broken));
  });
})();
"""
