"""Measures what hostile clients cost a running Photon, for RELIABILITY.md: how long idle and
slow connections stay open on every listener, the head's memory under oversized inputs, and
whether ordinary requests sent meanwhile fail.

    cargo build && python3 scripts/hostile-clients.py [path/to/photon]

Starts `photon run` on 127.0.0.1 (ports picked by the OS, token authentication off) with a
no-op application, runs each category while a client sends ordinary requests in a loop, prints
a Markdown table, and stops the head. Needs only Python 3 (standard library)."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTON = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "photon")
CONFIG = """
grpc_options:
  grpc_servicer_functions: [user_defined_protos_pb2_grpc.add_UserDefinedServiceServicer_to_server]
applications:
  - {name: noop, route_prefix: /noop, import_path: photon.examples:noop}
"""


def start():
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(CONFIG)
    config.close()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RUST_LOG="info")
    args = [PHOTON, "run", config.name, "--http-port", "0", "--grpc-port", "0", "--dashboard-port", "0",
            "--http-host", "127.0.0.1", "--proxy-threads", "1"]
    head = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    found = {}
    patterns = {"http": r"HTTP proxy listening on http://(\S+)", "grpc": r"gRPC proxy listening on (\S+)",
                "rest": r"REST API listening on http://(\S+)", "data": r"data=(\S+)"}
    deadline = time.time() + 60
    while len(found) < len(patterns) and time.time() < deadline:
        line = head.stderr.readline()
        for name, pattern in patterns.items():
            m = re.search(pattern, line)
            if m and name not in found:
                found[name] = m.group(1)
    threading.Thread(target=lambda: [None for _ in head.stderr], daemon=True).start()
    if len(found) < len(patterns):
        head.kill()
        sys.exit(f"photon did not report its listeners: {found}")
    return head, found


def addr(a):
    host, port = a.rsplit(":", 1)
    return host, int(port)


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Steady:
    """Ordinary requests in a loop; counts the ones that fail."""

    def __init__(self, http):
        self.http, self.sent, self.failed, self.stop = http, 0, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                with urllib.request.urlopen(f"http://{self.http}/noop", timeout=5) as r:
                    ok = r.status == 200
            except Exception:
                ok = False
            self.sent += 1
            self.failed += 0 if ok else 1
            time.sleep(0.02)

    def finish(self):
        self.stop = True
        self.thread.join()
        return self.sent, self.failed


def held_open(target, payload, trickle=None, limit=40):
    """Seconds until the server closes a connection that sends `payload` (then `trickle`,
    a byte at a time, every 2 s), or None if still open after `limit`."""
    s = socket.create_connection(addr(target))
    s.settimeout(0.5)
    start = time.time()
    if payload:
        s.sendall(payload)
    next_byte = start + 2
    while time.time() - start < limit:
        if trickle and time.time() >= next_byte:
            try:
                s.sendall(trickle)
            except OSError:
                return time.time() - start
            next_byte += 2
        try:
            if s.recv(65536) == b"":
                return time.time() - start
        except socket.timeout:
            continue
        except OSError:
            return time.time() - start
    s.close()
    return None


def slow_clients(ports):
    cases = [
        ("HTTP: connect, send nothing", ports["http"], b"", None, 100),
        ("HTTP: an h2c preface, then nothing", ports["http"], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None, 20),
        ("HTTP: a head a byte every 2 s", ports["http"], b"GET /noop HTTP/1.1\r\n", b"x", 50),
        ("HTTP: a body a byte every 2 s", ports["http"],
         b"POST /noop HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n", b"x", 20),
        ("HTTP: idle after a request (keep-alive)", ports["http"], b"GET /noop HTTP/1.1\r\nhost: x\r\n\r\n", None, 20),
        ("gRPC: connect, send nothing", ports["grpc"], b"", None, 20),
        ("REST API: a partial head", ports["rest"], b"GET /api/serve/applications/ HTTP/1.1\r\n", None, 20),
        ("replica data port: connect, send nothing", ports["data"], b"", None, 20),
    ]
    rows = []
    for what, target, payload, trickle, count in cases:
        results = [None] * count
        limit = 120 if "keep-alive" in what else 40

        def one(i, target=target, payload=payload, trickle=trickle, limit=limit):
            results[i] = held_open(target, payload, trickle, limit)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        closed = [r for r in results if r is not None]
        held = "never closed" if not closed else f"{statistics.median(closed):.1f} s median, {max(closed):.1f} s at most"
        rows.append((what, count, held, count - len(closed)))
    return rows


def oversized(ports, pid):
    rows = []

    def raw(target, data, read=True):
        s = socket.create_connection(addr(target))
        s.settimeout(30)
        try:
            s.sendall(data)
            return s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace") if read else ""
        except OSError as e:
            return f"connection closed ({e.__class__.__name__})"
        finally:
            s.close()

    before = peak_rss_mb(pid)
    answer = raw(ports["rest"], b"PUT /api/serve/applications/ HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                 b"content-length: 157286400\r\n\r\n" + b" " * (6 << 20))
    rows.append(("REST API: a 150 MiB config (6 MiB sent)", answer, peak_rss_mb(pid) - before))
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    body = json.dumps({"apiVersion": "ray.io/v1", "kind": "RayService", "spec": {"serveConfigV2": bomb}}).encode()
    before = peak_rss_mb(pid)
    answer = raw(ports["rest"], b"PUT /api/serve/applications/ HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    rows.append((f"REST API: a YAML alias bomb ({len(body)} bytes, 43 million nodes expanded)", answer,
                 peak_rss_mb(pid) - before))
    before = peak_rss_mb(pid)
    chunk = b"x" * (1 << 20)
    s = socket.create_connection(addr(ports["http"]))
    s.settimeout(30)
    s.sendall(b"POST /noop HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    answer = ""
    try:
        for _ in range(150):
            s.sendall(b"100000\r\n" + chunk + b"\r\n")
    except OSError:
        pass
    try:
        answer = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError as e:
        answer = f"connection closed ({e.__class__.__name__})"
    s.close()
    rows.append(("HTTP: a 150 MiB chunked body (limit 100 MiB)", answer, peak_rss_mb(pid) - before))
    before = peak_rss_mb(pid)
    answer = raw(ports["http"], b"GET /noop HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (200 << 10) + b"\r\n\r\n")
    rows.append(("HTTP: a 200 KiB request head", answer, peak_rss_mb(pid) - before))
    return rows


def main():
    head, ports = start()
    try:
        time.sleep(2)
        steady = Steady(ports["http"])
        start_rss = peak_rss_mb(head.pid)
        slow = slow_clients(ports)
        big = oversized(ports, head.pid)
        sent, failed = steady.finish()
        print("| slow client | connections | closed after | still open |")
        print("|---|---|---|---|")
        for what, count, held, still in slow:
            print(f"| {what} | {count} | {held} | {still} |")
        print()
        print(f"| oversized input | answer | head peak memory growth (MB) |")
        print("|---|---|---|")
        for what, answer, grew in big:
            print(f"| {what} | {answer} | {grew:.1f} |")
        print()
        print(f"head peak memory {start_rss:.0f} MB at the start, {peak_rss_mb(head.pid):.0f} MB at the end; "
              f"ordinary requests meanwhile: {sent} sent, {failed} failed")
    finally:
        head.terminate()
        head.wait(timeout=30)


if __name__ == "__main__":
    main()
