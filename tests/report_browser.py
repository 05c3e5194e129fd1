#!/usr/bin/env python
"""Open the workflow's HTML report in headless Chromium, measure its layout and take screenshots.

    python tests/report_browser.py report.html --out shots/               # 1280x720 and 1920x1080

Talks to Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
ending in NUL on file descriptors 3 and 4), so it needs no driver and no Python package beyond the
standard library. Chromium comes from Debian (`apt-get install chromium`); ensure_chromium()
installs it when it is missing and this process may (root and apt-get).
"""

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [(1280, 720), (1920, 1080)]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Layout facts of the report's first page (the workflow description with the headline tables and
# the rule graph), measured in the page. The main pane is the scrolling box beside the navigation.
FIRST_PAGE = """(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height}; };
  const nav = document.querySelector('#app nav');
  const pane = nav.nextElementSibling;
  const headings = [...pane.querySelectorAll('h1, h2')];
  const headline = headings.find((h) => h.textContent.trim() === 'Headline results');
  const graph = pane.querySelector('#rulegraph canvas, #rulegraph svg');
  return {
    window: {width: innerWidth, height: innerHeight},
    pane: box(pane), scroll_height: pane.scrollHeight, scroll_width: pane.scrollWidth,
    content: box(pane.firstElementChild),
    headline: headline ? box(headline) : null,
    headings: headings.map((h) => h.textContent.trim()),
    graph: graph ? box(graph) : null,
    blocks: [...pane.querySelectorAll('.prose table, .prose p, .prose h1')].map(box),
  };
})()"""

# Show one result in the main pane as a click on its view button does, and measure the image.
SHOW_FIGURE = """((path) => {
  app.setView({content: 'img', contentPath: results[path].data_uri, resultPath: path});
})(%s)"""
FIGURE = """(() => {
  const nav = document.querySelector('#app nav');
  const pane = nav.nextElementSibling;
  const img = pane.querySelector('img');
  if (!img || !img.complete || img.naturalWidth === 0) return null;
  const r = img.getBoundingClientRect(), p = pane.getBoundingClientRect();
  return {natural: [img.naturalWidth, img.naturalHeight], shown: [r.width, r.height],
          left: r.left - p.left, top: r.top - p.top};
})()"""

# Open a result's information panel (its caption) as a click on its information button does.
SHOW_INFO = "app.showResultInfo(%s)"
INFO_TABLES = """(() => ({
  nav_width: document.querySelector('#app nav').getBoundingClientRect().width,
  tables: [...document.querySelectorAll('#app nav table.docutils, #app nav .prose table')].map(
    (t) => ({rows: t.rows.length, header: [...t.rows[0].cells].map((c) => c.textContent.trim())})),
}))()"""


def ensure_chromium() -> str:
    """Path of a Chromium; installs Debian's package when none is found (needs root and apt-get)."""
    for name in NAMES:
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("no chromium found; install it (apt-get install chromium) or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    for cmd in (["apt-get", "update", "-qq"], install):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return shutil.which("chromium")


class Chromium:
    """One headless Chromium, driven over the DevTools pipe; a context manager that always ends it."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout, self.next_id, self.buffer, self.events = timeout, 0, b"", []
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                 "--disable-dev-shm-usage", "--remote-debugging-pipe", "--user-data-dir=" + self._profile()]
        # The pipe is fds 3 (commands in) and 4 (replies out): the shell maps them onto our pipes.
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null',
                                      executable, *flags, "about:blank"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def _profile(self) -> str:
        self.profile = tempfile.mkdtemp(prefix="report-browser-")
        return self.profile

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str, width: int, height: int) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.send("Page.navigate", {"url": url})
        page.wait("document.readyState === 'complete' && typeof app !== 'undefined'"
                  " && document.querySelector('#rulegraph canvas, #rulegraph svg') !== null")
        return page


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, condition: str, timeout: float = 30.0, settle: float = 0.3):
        """Until the JavaScript ``condition`` holds, then a moment for React and vega to draw."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never reached: {condition}")
            time.sleep(0.1)
        time.sleep(settle)

    def screenshot(self, path: Path, full_height: bool = False):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def first_page(self) -> dict:
        return self.evaluate(FIRST_PAGE)

    def figure(self, result_path: str) -> dict:
        self.evaluate(SHOW_FIGURE % json.dumps(result_path))
        self.wait(f"({FIGURE}) !== null")
        return self.evaluate(FIGURE)

    def info_tables(self, result_path: str) -> dict:
        self.evaluate(SHOW_INFO % json.dumps(result_path))
        self.wait("document.querySelector('#app nav') !== null", settle=1.0)  # the panel widens
        return self.evaluate(INFO_TABLES)

    def results(self) -> list[str]:
        """The report's result paths (every file marked for the report)."""
        return self.evaluate("Object.keys(results)")


def survey(report: Path, out: Path, sizes=SIZES, executable: str | None = None) -> dict:
    """Every layout fact the tests check, per window size, with screenshots in ``out``: the first
    page, then each figure of the first run and each table's information panel."""
    out.mkdir(parents=True, exist_ok=True)
    url = Path(report).resolve().as_uri()
    facts = {}
    with Chromium(executable or ensure_chromium()) as browser:
        for width, height in sizes:
            page = browser.open(url, width, height)
            size = f"{width}x{height}"
            first = page.first_page()
            page.screenshot(out / f"{size}_first_page.png")
            paths = page.results()
            figures, tables = {}, {}
            for path in paths:
                name = path.rsplit("/", 1)[-1]
                if name.endswith((".png", ".svg")) and "seed1/" not in path:
                    figures[path] = page.figure(path)
                    if name in ("confusion_matrix.svg", "training_curves.png"):
                        page.screenshot(out / f"{size}_{name.replace('.', '_')}.png")
                elif name.endswith((".csv", ".rst")) and "seed1/" not in path:
                    tables[path] = page.info_tables(path)
                    if name == "classification_report.csv":
                        page.screenshot(out / f"{size}_{name.replace('.', '_')}_info.png")
            facts[size] = {"first_page": first, "results": paths, "figures": figures, "tables": tables}
    return facts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="report.html written by snakemake --report")
    p.add_argument("--out", type=Path, default=Path("report_screenshots"), help="folder for the screenshots "
                   "(default: report_screenshots)")
    a = p.parse_args(argv)
    json.dump(survey(a.report, a.out), sys.stdout, indent=1)


if __name__ == "__main__":
    main()
