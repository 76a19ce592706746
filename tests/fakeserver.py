"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It speaks `POST /v1/chat/completions` with real HTTP (ThreadingHTTPServer, keep-alive) and answers with
a line taken from the request's own system prompt (the `- ...` example lines the generator puts there),
so conversations look plausible. Faults are injected per request from a script:

    ok        a normal reply after `delay` seconds
    429       Too Many Requests with `Retry-After: <retry_after>`
    500       Internal Server Error
    401       Unauthorized (not worth retrying)
    slow      a reply after `slow` seconds (past the client's timeout)
    badjson   200 with Content-Type application/json and a body that is not JSON
    drop      the connection is closed without any response
"""
import json, socket, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body go out at once (no 40 ms delayed-ACK stall)
    def log_message(self, *a): pass

    def _send(self, code, body, ctype="application/json", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(data)))
        for k, v in headers: self.send_header(k, v)
        self.end_headers(); self.wfile.write(data); self.wfile.flush()

    def do_POST(self):
        srv = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
        action, n = srv._next(self.headers.get("Authorization", ""))
        if action == "drop":
            self.close_connection = True
            try: self.connection.shutdown(socket.SHUT_RDWR)
            except OSError: pass
            self.connection.close(); return
        if action == "429":
            return self._send(429, json.dumps({"error": {"message": "rate limited", "type": "rate_limit"}}), headers=[("Retry-After", str(srv.retry_after))])
        if action == "500": return self._send(500, json.dumps({"error": {"message": "boom"}}))
        if action == "401": return self._send(401, json.dumps({"error": {"message": "invalid api key", "type": "invalid_request_error"}}))
        if action == "badjson":
            time.sleep(srv.delay); return self._send(200, b'{"id": "x", "choices": [ {"message": ')
        time.sleep(srv.slow if action == "slow" else srv.delay)
        try: req = json.loads(body)
        except ValueError: return self._send(400, json.dumps({"error": {"message": "bad request body"}}))
        text = srv.reply(req, n)
        pt = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", []))
        ct = len(text.split())
        out = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": req.get("model", "fake"),
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
        try: self._send(200, json.dumps(out))
        except (BrokenPipeError, ConnectionResetError): pass   # the client gave up (timeout)

def example_reply(req, n):
    "A line from the request's system prompt (its `- ...` examples), varied by the request number."
    sys = next((m["content"] for m in req.get("messages", []) if m.get("role") == "system"), "")
    blocks = [b for b in sys.split("\n\n") if "\n- " in b]          # the last bulleted block: the examples
    lines = [l[2:].strip() for l in (blocks[-1] if blocks else "").splitlines() if l.startswith("- ")]
    if not lines: return f"Okay, noted (reply {n})."
    return lines[n % len(lines)]

class _Server(ThreadingHTTPServer):
    request_queue_size = 256            # many clients connect at once (the default backlog of 5 drops some)
    daemon_threads = True

class FakeChatServer:
    "A chat-completions server on 127.0.0.1 in a background thread; `script` lists faults per request, then `ok`."
    def __init__(self, delay=0.0, script=(), retry_after=1, slow=3.0, reply=example_reply, default="ok"):
        self.delay, self.script, self.retry_after, self.slow, self.reply, self.default = delay, list(script), retry_after, slow, reply, default
        self.counts, self.log, self.auth, self._lock = Counter(), [], Counter(), threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _next(self, auth):
        with self._lock:
            n = len(self.log)
            action = self.script.pop(0) if self.script else self.default
            self.log.append((time.monotonic(), action)); self.counts[action] += 1; self.auth[auth] += 1
            return action, n

    @property
    def requests(self): return len(self.log)
    def start(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start(); return self
    def stop(self): self.httpd.shutdown(); self.httpd.server_close()
    def __enter__(self): return self.start()
    def __exit__(self, *a): self.stop()

if __name__ == "__main__":   # python tests/fakeserver.py [delay]: serve until killed
    import sys
    s = FakeChatServer(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0).start()
    print(s.url, flush=True)
    threading.Event().wait()
