"""`image_queue report`: a self-contained, offline HTML gallery of a run, checked in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import IQ
from tests.fake_gateway import FakeGateway, error

HOSTILE_PROMPT = '<script>alert("prompt")</script> & "quotes" </article>'
HOSTILE_ERROR = 'Bad prompt <img src=x onerror=alert(1)></pre><script>alert("api")</script>'
OUTPUT_DIR = "imgs #1 (covers) ü"  # a space, a hash, brackets and non-ASCII: all must survive in the links


class Page(HTMLParser):
    """The tags and attributes of a page, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]


@pytest.fixture
def gallery(iq: IQ) -> tuple[IQ, str]:
    """A finished run with 3 images (one in an awkwardly named output dir), a task failed by an API
    error that carries markup, a crashed worker and a rejected task."""
    with FakeGateway() as gw:
        (iq.tmp / "image_queue.toml").write_text(
            f'[providers.oa]\nkind = "openai-images"\nbase_url = "{gw.openai_base}"\napi_key_env = "REPORT_KEY"\n'
            "request_timeout_seconds = 10\n")
        iq.env["REPORT_KEY"] = "sk-report-0123456789abcdef"
        gw.script("generations", error(400, "invalid_request_error", HOSTILE_ERROR))
        tasks = [
            {"task_key": "fox", "prompt": HOSTILE_PROMPT, "size": "96x64", "metadata": {"post": "<b>7</b>"}},
            {"task_key": "api-refused", "prompt": "p", "provider": "oa", "size": "1024x1024", "max_attempts": 1},
            {"task_key": "crash", "prompt": "p", "mock_exit_code": 3},
            {"task_key": "owl", "task_name": "night owl", "prompt": "an owl", "size": "64x64"},
            {"task_key": "typo", "promt": "p"},
            {"task_key": "cat", "prompt": "a cat", "size": "64x96"},
        ]
        proc = iq("run", iq.tasks_file(tasks), "--output-dir", OUTPUT_DIR, "--json")
    assert proc.returncode == 1, proc.stderr
    run_id = re.search(r'"run_id": "([^"]+)"', proc.stdout).group(1)
    return iq, run_id


def test_report_is_self_contained_with_relative_links(gallery: tuple[IQ, str]) -> None:
    """`report` writes runs/<run_id>/report.html: images by relative links that resolve to the
    run's files, no external asset or absolute URL anywhere, inline CSS/JS only."""
    iq, run_id = gallery
    proc = iq("report", check=0)  # default: the last run
    path = iq.state / "runs" / run_id / "report.html"
    assert path.as_uri() in proc.stdout
    html = path.read_text()
    page = Page(html)
    imgs = page.all("img")
    assert len(imgs) == 3
    for img in imgs:
        src = img["src"] or ""
        assert not src.startswith(("/", "file:", "http:", "https:", "data:")), src
        target = (path.parent / unquote(src)).resolve()
        assert target.is_file() and target.parent == (iq.tmp / OUTPUT_DIR).resolve()
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http:", "https:", "//")), (tag, value)
    assert not page.all("link") and not page.all("iframe")
    assert len(page.all("script")) == 1 and len(page.all("style")) == 1
    assert "Content-Security-Policy" in html


def test_report_escapes_untrusted_text_and_explains_failures(gallery: tuple[IQ, str]) -> None:
    """Prompts and API error texts appear as text, never as markup; failed and rejected cards show
    their human reason and error; there is a filter button per status and the summary on top."""
    iq, run_id = gallery
    iq("report", run_id, check=0)
    html = (iq.state / "runs" / run_id / "report.html").read_text()
    page = Page(html)
    assert len(page.all("script")) == 1  # ours only: neither the prompt's nor the API's
    assert not [i for i in page.all("img") if i.get("onerror")]
    text = "".join(page.text)
    assert HOSTILE_PROMPT in text and HOSTILE_ERROR in text  # shown, as text
    assert "&lt;script&gt;alert(&quot;prompt&quot;)" in html
    assert "The image service refused the request as invalid" in text  # diagnosis.human_reason
    assert "The worker process stopped without producing a result" in text
    assert "unknown field 'promt'" in text
    statuses = {b.get("data-filter") for b in page.all("button")}
    assert statuses == {"all", "completed", "failed", "rejected"}
    cards = {a["data-status"] for a in page.all("article")}
    assert cards == {"completed", "failed", "rejected"}
    assert "not every task ended ok" in text and run_id in text
    for field in ("openai-images", "oa", "gpt-image-2", "1024x1024", "mock", "96x64", "attempts", "duration"):
        assert field in text, field


def test_report_out_elsewhere_and_missing_images(gallery: tuple[IQ, str]) -> None:
    """--out puts the page anywhere (a file, or a directory) with links still relative to it; an image
    deleted since the run is flagged as missing instead of showing a broken image; an unknown run id
    is exit 2."""
    iq, run_id = gallery
    out = iq.tmp / "site" / "covers.html"
    out.parent.mkdir()
    doc = iq.json("report", run_id, "--out", str(out))
    assert doc["kind"] == "report" and doc["path"] == str(out) and doc["images"] == 3
    for img in Page(out.read_text()).all("img"):
        assert (out.parent / unquote(img["src"] or "")).is_file()
    into_dir = iq.json("report", run_id, "--out", f"{iq.tmp / 'pages' / 'new'}/")  # a trailing slash: a directory
    assert into_dir["path"] == str(iq.tmp / "pages" / "new" / "report.html")
    victim = next((iq.tmp / OUTPUT_DIR).glob("cat*"))
    victim.unlink()
    doc = iq.json("report", run_id)
    assert doc["images"] == 2 and doc["missing_images"] == 1
    assert "image file missing" in Path(doc["path"]).read_text()
    assert iq("report", "20000101-000000-000000").returncode == 2


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(path: Path, profile: Path, *args: str, fragment: str = "") -> subprocess.CompletedProcess[str]:
    """Load the page from file:// in headless Chromium, network features off."""
    binary = chromium()
    assert binary
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
            *args, path.as_uri() + fragment]
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, env=env)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium); "
                                               "the report's real-browser check needs it")
def test_report_renders_in_a_real_browser_with_no_broken_images(gallery: tuple[IQ, str], tmp_path: Path) -> None:
    """Headless Chromium opens the report from file:// and every image loads (complete, with a
    natural width); the status filter hides the other cards; a screenshot renders."""
    iq, run_id = gallery
    iq("report", check=0)
    path = iq.state / "runs" / run_id / "report.html"
    dom = browse(path, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-images-loaded="3"' in body and 'data-images-broken="0"' in body, body
    filtered = browse(path, tmp_path / "profile", "--dump-dom", fragment="#status=failed")
    cards = Page(filtered.stdout).all("article")
    shown = [c["data-status"] for c in cards if "hidden" not in c]
    assert shown == ["failed", "failed"] and len(cards) == 6, cards
    shot = tmp_path / "report.png"
    grab = browse(path, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,1400", f"--screenshot={shot}")
    assert grab.returncode == 0, grab.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("IMAGE_QUEUE_KEEP_SCREENSHOT")
    if keep:  # for a person to look at: IMAGE_QUEUE_KEEP_SCREENSHOT=/tmp/report.png pytest tests/test_report.py
        shutil.copy(shot, keep)
