"""A tiny OpenAI-compatible HTTP server for tests, with scripted faults."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAIServer:
    """Serves /v1/chat/completions and /v1/embeddings on a free loopback port.

    ``script`` holds what the next requests get: a label string, ``("status", code,
    headers)``, ``("sleep", seconds)`` (beyond the client timeout) or ``("json400",)``
    to reject response_format. With the script empty, it answers ``default_label``.
    """

    def __init__(self, default_label: str = "card_delivery") -> None:
        self.script: deque = deque()
        self.requests: list[dict] = []
        self.default_label = default_label
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                step = server.script.popleft() if server.script else server.default_label
                if isinstance(step, tuple) and step[0] == "status":
                    self._send(step[1], {"error": {"message": "scripted"}}, step[2])
                elif isinstance(step, tuple) and step[0] == "sleep":
                    time.sleep(step[1])
                    self._send(200, {})
                elif isinstance(step, tuple) and step[0] == "json400":
                    if "response_format" in body:
                        self._send(400, {"error": {"message": "response_format unsupported"}})
                    else:
                        self._send(200, server._chat(server.default_label, body))
                elif self.path.endswith("/embeddings"):
                    inputs = body["input"]
                    self._send(
                        200,
                        {
                            "object": "list",
                            "model": body["model"],
                            "data": [
                                {
                                    "object": "embedding",
                                    "index": i,
                                    "embedding": [float(len(t)), 1.0, 0.5],
                                }
                                for i, t in enumerate(inputs)
                            ],
                            "usage": {"prompt_tokens": 1, "total_tokens": 1},
                        },
                    )
                else:
                    self._send(200, server._chat(step, body))

            def _send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def _chat(label, body: dict) -> dict:
        """One label, or for a grouped question (several ``<message`` blocks) a list:
        the scripted list, else the label once per message."""
        n = body["messages"][-1]["content"].count("<message n=")
        if n:
            labels = label if isinstance(label, list) else [label] * n
            structured = "response_format" in body
            content = json.dumps({"labels": labels}) if structured else "\n".join(labels)
        else:
            content = json.dumps({"label": label}) if "response_format" in body else label
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
        }

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
