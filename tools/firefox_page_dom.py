#!/usr/bin/env python3
"""Loads a page in headless Firefox (Debian's firefox-esr) through Marionette, its built-in remote
protocol (a TCP socket carrying `LENGTH:JSON` messages, spoken here with the standard library, so
nothing is downloaded: no geckodriver, no Python package), waits until the element `#status` says
`done` or `error` (or --timeout passes), and prints the page's DOM (outerHTML) on stdout. With
--screenshot FILE, also writes a PNG of the window.

    python3 tools/firefox_page_dom.py http://127.0.0.1:PORT/#generate [--screenshot FILE]

tools/serve_page_check.sh --browser firefox runs it and checks the DOM as it checks Chromium's.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


class Marionette:
    def __init__(self, port, timeout):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("firefox_page_dom: Marionette did not start")
                time.sleep(0.2)
        self.sock.settimeout(timeout)
        self.buffer = b""
        self.next_id = 0
        self.read()  # the server's greeting: {"applicationType": "gecko", "marionetteProtocol": 3}

    def read(self):
        while b":" not in self.buffer:
            self.recv()
        length, _, rest = self.buffer.partition(b":")
        n = int(length)
        self.buffer = rest
        while len(self.buffer) < n:
            self.recv()
        message, self.buffer = self.buffer[:n], self.buffer[n:]
        return json.loads(message)

    def recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("firefox_page_dom: Marionette closed the connection")
        self.buffer += chunk

    def call(self, name, params=None):
        self.next_id += 1
        data = json.dumps([0, self.next_id, name, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            kind, mid, error, result = self.read()
            if kind == 1 and mid == self.next_id:
                if error:
                    raise SystemExit(f"firefox_page_dom: {name}: {error}")
                return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--screenshot")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--firefox", default=shutil.which("firefox-esr") or shutil.which("firefox") or "firefox-esr")
    args = ap.parse_args()

    profile = tempfile.mkdtemp(prefix="lumen-firefox-")
    port = free_port()
    prefs = {
        "marionette.port": port,
        "browser.shell.checkDefaultBrowser": False,
        "browser.startup.homepage_override.mstone": "ignore",
        "datareporting.policy.dataSubmissionEnabled": False,
        "toolkit.telemetry.reportingpolicy.firstRun": False,
        "app.update.disabledForTesting": True,
        "browser.aboutwelcome.enabled": False,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
    }
    with open(os.path.join(profile, "user.js"), "w") as f:
        for k, v in prefs.items():
            f.write(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n")
    env = dict(os.environ, MOZ_HEADLESS="1", MOZ_HEADLESS_WIDTH="1000", MOZ_HEADLESS_HEIGHT="700")
    firefox = subprocess.Popen([args.firefox, "--headless", "--marionette", "--no-remote", "--profile", profile],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        m = Marionette(port, args.timeout)
        m.call("WebDriver:NewSession", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
        m.call("WebDriver:Navigate", {"url": args.url})
        deadline = time.time() + args.timeout
        script = "const s = document.getElementById('status'); return s ? s.textContent : '';"
        while time.time() < deadline:
            status = m.call("WebDriver:ExecuteScript", {"script": script, "args": []})["value"]
            if status.startswith("done") or status.startswith("error"):
                break
            time.sleep(0.1)
        html = m.call("WebDriver:ExecuteScript", {"script": "return document.documentElement.outerHTML;", "args": []})["value"]
        if args.screenshot:
            png = m.call("WebDriver:TakeScreenshot", {"full": False})["value"]
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(png))
        try:
            m.call("Marionette:Quit", {"flags": ["eForceQuit"]})
        except SystemExit:
            pass
        sys.stdout.write(html + "\n")
    finally:
        try:
            firefox.wait(timeout=10)
        except subprocess.TimeoutExpired:
            firefox.kill()
            firefox.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
