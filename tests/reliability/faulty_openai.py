"""An OpenAI-compatible chat server that misbehaves on purpose, at set rates.

Faults, drawn per request from a seeded RNG: 429 with ``Retry-After``/``retry-after-ms``,
500/502/503, a hang past the client's timeout, a truncated JSON body, and a slow body
trickled out in pieces (which should succeed). Otherwise it answers a snake_case label
made from the message's words. Every request is counted per message text, so a run can
check each item's requests against the retry budget.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = {
    "rate_limited": 0.06,
    "server_error": 0.06,
    "hang": 0.02,
    "truncated": 0.04,
    "slow": 0.04,
}
_WORD = re.compile(r"[a-z]{4,}")
_STOP = {"what", "with", "have", "this", "that", "there", "from", "when", "does", "your"}


def _label(text: str) -> str:
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
    return "_".join((words or ["misc"])[:2])


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out close the socket under a hanging answer: expected


class FaultyOpenAIServer:
    """``url`` is the base URL; ``counts`` counts faults served, ``per_text`` requests."""

    def __init__(self, *, seed: int = 0, hang: float = 3.0, faults: dict | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = dict(FAULTS if faults is None else faults)
        self.hang = hang
        self.counts: Counter[str] = Counter()
        self.per_text: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FaultyOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _draw(self) -> str:
        with self._lock:
            roll, acc = self.rng.random(), 0.0
            for fault, p in self.faults.items():
                acc += p
                if roll < acc:
                    self.counts[fault] += 1
                    return fault
            self.counts["ok"] += 1
            return "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                message = text.split("<message>")[-1].split("</message>")[0].strip()
                with server._lock:
                    server.per_text[message] += 1
                fault = server._draw()
                if fault == "rate_limited":
                    headers = (
                        {"retry-after-ms": "40"}
                        if server.rng.random() < 0.5
                        else {"Retry-After": "0.05"}
                    )
                    return self._send(429, {"error": {"message": "slow down"}}, headers)
                if fault == "server_error":
                    code = server.rng.choice([500, 502, 503])
                    return self._send(code, {"error": {"message": "upstream failed"}})
                if fault == "hang":
                    time.sleep(server.hang)
                    return self._send(200, {})
                payload = json.dumps(self._chat(message, body)).encode()
                if fault == "truncated":
                    return self._raw(200, payload[: len(payload) // 2], len(payload) // 2)
                if fault == "slow":
                    return self._raw(200, payload, len(payload), pieces=8, pause=0.03)
                return self._raw(200, payload, len(payload))

            def _chat(self, message: str, body: dict) -> dict:
                label = _label(message)
                content = json.dumps({"label": label}) if "response_format" in body else label
                return {
                    "id": "chatcmpl-faulty",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "faulty"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24},
                }

            def _send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self._raw(code, data, len(data), headers=headers)

            def _raw(self, code, data, length, *, headers=None, pieces=1, pause=0.0):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                step = max(1, len(data) // pieces)
                for start in range(0, len(data), step):
                    self.wfile.write(data[start : start + step])
                    self.wfile.flush()
                    if pause:
                        time.sleep(pause)

        return Handler
