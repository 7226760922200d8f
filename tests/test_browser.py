"""The HPARAMS tab in a real browser: `runsmon serve` on the demo runs, seen by headless Chromium.

Chromium is driven over the Chrome DevTools Protocol (a websocket) with the
standard library only.  Skipped where Debian's ``chromium`` is not installed
(``.ci/run`` installs it with apt-get when it can).  ``--screenshot PATH``
(see conftest.py) also saves the screenshot there (``make screenshot``).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tb import poll, session_groups_at

from runsmon import demo
from runsmon.hparams import value_text

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
ROOT = Path(__file__).resolve().parent.parent


def find_chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


# -- a minimal websocket client (RFC 6455), enough for the DevTools protocol ----


class WebSocket:
    """Text frames over one TCP connection; client frames masked, as the RFC says."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", url)
        if not m:
            raise ValueError(f"not a ws:// URL: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"websocket handshake refused: {status!r}")
        self._buf = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text: str) -> None:
        data = text.encode()
        header = bytearray([0x81])  # FIN, text frame
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            payload = self._read(n)  # server frames are not masked
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x9, 0xA):  # ping/pong: nothing to do for this client
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        self.ws = WebSocket(ws_url)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()


#: Every text of the page, through shadow roots and same-origin frames, with
#: a newline between elements (the HPARAMS tab is Polymer: deep shadow DOM).
DEEP_TEXT = r"""
(() => {
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const t = node.textContent.trim();
      if (t) out.push(t);
      return;
    }
    if (['STYLE', 'SCRIPT', 'NOSCRIPT'].includes(node.tagName)) return;
    if (node.shadowRoot) walk(node.shadowRoot);
    if (node.tagName === 'IFRAME') {
      try { if (node.contentDocument) walk(node.contentDocument); } catch (e) {}
    }
    for (const child of node.childNodes) walk(child);
  };
  walk(document);
  return out.join('\n');
})()
"""


@contextlib.contextmanager
def chromium(url: str, profile: Path) -> Iterator[DevTools]:
    """Headless Chromium showing ``url``; yields its page's DevTools client."""
    exe = find_chromium()
    assert exe is not None
    proc = subprocess.Popen(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1600,1000",
            url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    page = None
    try:
        port_file = profile / "DevToolsActivePort"
        port = poll(
            lambda: int(port_file.read_text().split()[0]),
            lambda p: p > 0,
            timeout=30,
            what="Chromium's DevTools port",
        )
        targets = poll(
            lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")),
            lambda ts: any(t.get("type") == "page" for t in ts),
            timeout=30,
            what="a page in Chromium",
        )
        target = next(t for t in targets if t.get("type") == "page")
        page = DevTools(target["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Runtime.enable")
        yield page
    finally:
        if page is not None:
            page.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def runsmon_demo(tmp: Path, running_seconds: float) -> Iterator[tuple[str, str]]:
    """``runsmon demo --port 0`` in a subprocess; yields (URL, runs dir)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runsmon",
            "demo",
            "--port",
            "0",
            "--dir",
            str(tmp / "demo"),
            "--running-seconds",
            str(running_seconds),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=open(tmp / "runsmon.log", "w"),  # noqa: SIM115 - closed with the process
        text=True,
    )
    try:
        url = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            m = re.search(r"TensorBoard at (http://\S+?)/?#hparams", line)
            if m:
                url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        assert url, "runsmon demo printed no URL; its log:\n" + (tmp / "runsmon.log").read_text()
        yield url, str(tmp / "demo" / "runs")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


#: The HPARAMS tab's column checkboxes (hparams and metrics) by name: checked or not.
COLUMN_BOXES = r"""
(() => {
  const out = {};
  const walk = (node) => {
    if (node.tagName === 'PAPER-CHECKBOX' && node.getRootNode().host
        && node.getRootNode().host.tagName === 'TF-HPARAMS-QUERY-PANE') {
      const name = node.textContent.trim();
      if (!(name in out)) out[name] = node.checked;
    }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of (node.children || [])) walk(child);
  };
  walk(document);
  return out;
})()
"""

#: Set the query pane's column boxes as WANTED says ({name: checked}), in its
#: order: the table view appends a newly ticked column at its end.
SET_COLUMNS = r"""
((wanted) => {
  const boxes = {};
  const walk = (node) => {
    if (node.tagName === 'PAPER-CHECKBOX' && node.getRootNode().host
        && node.getRootNode().host.tagName === 'TF-HPARAMS-QUERY-PANE') {
      const name = node.textContent.trim();
      if (!(name in boxes)) boxes[name] = node;
    }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of (node.children || [])) walk(child);
  };
  walk(document);
  for (const [name, checked] of Object.entries(wanted)) {
    if (name in boxes && boxes[name].checked !== checked) boxes[name].click();
  }
  return Object.keys(boxes);
})
"""


def show_columns(
    page: DevTools, wanted: dict[str, bool], shown: Callable[[], bool], timeout: float = 30
) -> None:
    """Tick the query pane's column boxes until ``shown()`` says the table shows them.

    A click while the dashboard is still settling can leave a box ticked and
    the table unchanged; untick and tick again then.
    """
    deadline = time.monotonic() + timeout
    retry = time.monotonic() + 4
    while time.monotonic() < deadline:
        page.evaluate(f"{SET_COLUMNS}({json.dumps(wanted)})")
        if shown():
            return
        if time.monotonic() > retry:
            page.evaluate(f"{SET_COLUMNS}({json.dumps({n: not w for n, w in wanted.items()})})")
            time.sleep(0.5)
            retry = time.monotonic() + 4
        time.sleep(0.5)
    raise AssertionError(f"the table does not show columns {wanted}: {table_view(page)}")


def page_lines(page: DevTools) -> list[str]:
    return (page.evaluate(DEEP_TEXT) or "").splitlines()


def shown_number(page: DevTools, value: float) -> str:
    """A number as the dashboard's table prints it (JavaScript's toPrecision(5))."""
    return page.evaluate(f"Number({float(value)!r}).toPrecision(5)")


def expected_cell(page: DevTools, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value_text(value)
    return shown_number(page, value)


#: The table view's grid (a vaadin-grid): its header texts and each row's
#: cell texts, read through the slots its cells are shown in.
TABLE_VIEW = r"""
(() => {
  let grid = null;
  const walk = (node) => {
    if (grid) return;
    if (node.id === 'sessionGroupsTable') { grid = node; return; }
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of (node.children || [])) walk(child);
  };
  walk(document);
  if (!grid) return null;
  const text = (cell) => {
    const slot = cell.querySelector('slot');
    if (!slot) return '';
    return slot.assignedNodes().map((n) => n.textContent).join(' ').trim();
  };
  const rows = (selector) => [...grid.shadowRoot.querySelectorAll(selector)]
    .filter((tr) => !tr.hidden)
    .map((tr) => [...tr.querySelectorAll('th, td')].filter((c) => !c.hidden).map(text));
  return {headers: rows('thead tr')[0] || [], rows: rows('tbody tr')};
})()
"""


def table_view(page: DevTools) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(column headers, {row name: {header: cell}}) of the HPARAMS table view."""
    grid = page.evaluate(TABLE_VIEW)
    if not grid:
        return [], {}
    headers = grid["headers"]
    rows = {row[0]: dict(zip(headers, row, strict=False)) for row in grid["rows"] if row}
    return headers, rows


@pytest.mark.browser
@pytest.mark.tb
def test_hparams_tab_in_chromium(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if find_chromium() is None:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium); the browser test needs it"
        )
    with runsmon_demo(tmp_path, running_seconds=300) as (url, runs_dir):
        from runsmon.sources.guild import GuildRuns

        runs = GuildRuns(runs_dir)()
        expected = demo.all_runs()
        assert {r.label for r in runs} == set(expected)
        assert {r.status for r in runs} == {"completed", "error", "running"}
        hparams = sorted(expected["baseline"])  # the experiment declares them sorted
        # The tab reads the session list once when it opens: wait until
        # TensorBoard has every run, as the page will ask for them.
        poll(
            lambda: _session_groups(url),
            lambda groups: len(groups) == len(runs),
            timeout=30,
            what=f"{len(runs)} session groups",
        )
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
        with chromium(f"{url}/#hparams", profile) as page:
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=2200,
                height=600,
                deviceScaleFactor=1,
                mobile=False,
            )

            def text() -> list[str]:
                return page_lines(page)

            # The table view is the tab's first view: wait for every run's row
            # (its session group name: runsmon's name for the run).
            def names_shown(view: tuple[list[str], dict[str, dict[str, str]]]) -> bool:
                return all(any(n.endswith(f" {r.label}") for n in view[1]) for r in runs)

            _, rows = poll(
                lambda: table_view(page),
                names_shown,
                timeout=60,
                interval=0.5,
                what="every demo run in the HPARAMS table",
            )
            names = {r.label: next(n for n in rows if n.endswith(f" {r.label}")) for r in runs}
            # Every hparam is a column, but the dashboard shows the first five
            # at first: tick the others, then read each row's cells.
            boxes = page.evaluate(COLUMN_BOXES)
            assert set(hparams) <= set(boxes), boxes
            want = {
                r.label: {h: expected_cell(page, r.hparams()[h]) for h in hparams} for r in runs
            }

            def hparam_cells() -> dict[str, dict[str, str | None]]:
                _, rows = table_view(page)
                return {
                    label: {h: rows.get(name, {}).get(h) for h in hparams}
                    for label, name in names.items()
                }

            show_columns(page, dict.fromkeys(hparams, True), lambda: hparam_cells() == want)
            assert hparam_cells() == want
            for run in runs:
                assert run.hparams() == expected[run.label], run.label

            # The screenshot: the main flags, then the validation metrics.
            # Untick every column, then tick those.
            metrics = ["val.loss", "val.accuracy", "time"]
            headers = ["lr", "optimizer", "layers", "dropout", "activation", "augment", *metrics]
            everything = [*hparams, "accuracy", "loss", "train.accuracy", "train.loss", *metrics]
            page.evaluate(f"{SET_COLUMNS}({json.dumps(dict.fromkeys(everything, False))})")
            time.sleep(1.0)
            show_columns(
                page,
                {**dict.fromkeys(everything, False), **dict.fromkeys(headers, True)},
                lambda: set(table_view(page)[0][2:]) == set(headers),
            )
            time.sleep(1.0)  # let the rows paint
            shot = tmp_path / "hparams-table.png"
            page.screenshot(shot)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert shot.stat().st_size > 10_000
            target = request.config.getoption("--screenshot")
            if target:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)


def _session_groups(url: str) -> list[dict[str, Any]]:
    """The HParams plugin's session groups, as the tab first asks for them."""
    return session_groups_at(url, slice_size=100, timeout=10)["sessionGroups"]
