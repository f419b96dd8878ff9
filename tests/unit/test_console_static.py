"""The console's page ships with the package: every asset it names is served, nothing comes from
another origin, and no script or style is inline (the page's Content-Security-Policy forbids it)."""
from __future__ import annotations

import re

from shared.functions.console import ASSETS, PAGE_HEADERS, STATIC


def test_the_page_loads_only_its_own_assets():
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    named = set(re.findall(r'(?:src|href)="console/assets/([^"]+)"', page))
    assert named == set(ASSETS) and all((STATIC / name).is_file() for name in ASSETS)
    for name in ("index.html", *ASSETS):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"(?:src|href|url\()\s*=?\s*[\"']?(?:https?:)?//", text), f"{name} loads from elsewhere"
        assert "@import" not in text, name
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handlers would need 'unsafe-inline'"


def test_the_page_refuses_frames_and_other_origins():
    policy = PAGE_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert PAGE_HEADERS["X-Frame-Options"] == "DENY"


def test_the_key_is_sent_as_a_header_and_kept_for_the_tab_only():
    script = (STATIC / "console.js").read_text(encoding="utf-8")
    assert '"x-functions-key": key' in script and "sessionStorage" in script and "localStorage" not in script
    assert "code=" not in script, "the key never goes into a URL"
    assert ".innerHTML" not in script, "record data is set as text"
