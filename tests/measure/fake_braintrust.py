#!/usr/bin/env python3
"""A minimal loopback Braintrust API for the spool measurements (tests/measure/*.sh).

Serves login, project, version and /logs3 on 127.0.0.1:PORT, accepts any API key, and
keeps only the ids of the rows it accepted (so that it stays small while a 256 MiB spool
is replayed into it). `GET /__stats` answers `{"rows": N, "unique": U, "ids_file": ...}`
and writes every accepted id, one a line, to IDS_FILE.

usage: fake_braintrust.py PORT IDS_FILE
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
IDS_FILE = sys.argv[2]
URL = f"http://127.0.0.1:{PORT}"
LOCK = threading.Lock()
IDS = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The status line and headers go out in one write and the body in another: with Nagle's
    # algorithm on, the body waits for the client's delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if self.path == "/version":
            self.answer(200, {"version": "measure"})
        elif self.path == "/__stats":
            with LOCK:
                ids = list(IDS)
            with open(IDS_FILE, "w") as f:
                f.write("\n".join(ids) + ("\n" if ids else ""))
            self.answer(200, {"rows": len(ids), "unique": len(set(ids)), "ids_file": IDS_FILE})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        body = self.body()
        if self.path == "/api/apikey/login":
            org = {"id": "org-1", "name": "measure-org", "api_url": URL, "proxy_url": URL}
            self.answer(200, {"org_info": [org]})
        elif self.path == "/v1/project":
            name = json.loads(body or b"{}").get("name", "p")
            self.answer(200, {"id": "proj-" + name, "name": name, "org_id": "org-1"})
        elif self.path == "/logs3":
            rows = json.loads(body)["rows"]
            with LOCK:
                IDS.extend(str(r.get("id")) for r in rows)
            self.answer(200, {"ids": [r.get("id") for r in rows]})
        else:
            self.answer(404, {"error": "not found"})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
