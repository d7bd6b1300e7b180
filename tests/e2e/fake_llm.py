"""A model server on 127.0.0.1 that speaks Ollama's and OpenAI's wire APIs with scripted answers.

The real AbstractCore provider code talks to it over real HTTP. Each POST takes the next step
of the script; a step is what the model "does":

    {"text": "..."}                            an answer
    {"tool_calls": [{"name", "arguments"}]}     tool calls (Ollama: in the text, in the format the
                                                prompt asks for; OpenAI: native tool_calls)
    {"tokens": ["He", "llo"], "gap": 0.05}      streamed, when the request asks to stream
    {"status": 500}                             an HTTP error
    {"sleep": 3}                                an answer that comes too late (a timeout)
    {"malformed": True}                         a body that is not JSON
    {"echo_headers": True}                      401 with the request's Authorization header in the body

With the script empty, it answers {"text": "default"}.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List


def _ollama(path: str, step: Dict[str, Any], model: str) -> Dict[str, Any]:
    text = step.get("text", "")
    calls = step.get("tool_calls") or []
    if calls:
        text = "\n".join(
            "<|tool_call|>\n" + json.dumps({"name": c["name"], "arguments": c["arguments"]}) + "\n</|tool_call|>"
            for c in calls
        )
    usage = {"prompt_eval_count": 11, "eval_count": 7}
    if path.startswith("/api/generate"):
        return {"model": model, "response": text, "done": True, "done_reason": "stop", **usage}
    return {"model": model, "message": {"role": "assistant", "content": text}, "done": True, "done_reason": "stop", **usage}


def _openai(step: Dict[str, Any], model: str) -> Dict[str, Any]:
    calls = step.get("tool_calls") or []
    msg: Dict[str, Any] = {"role": "assistant", "content": step.get("text") or None}
    if calls:
        msg["tool_calls"] = [
            {"id": c.get("id", f"call_{i}"), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for i, c in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


class FakeLLMServer:
    def __init__(self) -> None:
        self.script: List[Dict[str, Any]] = []
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/api/tags"):
                    return self._send(200, {"models": [{"name": "qwen3:4b", "model": "qwen3:4b"}]})
                if self.path.startswith("/v1/models"):
                    return self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                self._send(404, {"error": f"no {self.path}"})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = server.script.pop(0) if server.script else {"text": "default"}
                if step.get("sleep"):
                    time.sleep(step["sleep"])
                if step.get("echo_headers"):
                    return self._send(401, {"error": f"bad key: {self.headers.get('Authorization')}"})
                if step.get("status", 200) != 200:
                    return self._send(step["status"], {"error": step.get("error", "upstream exploded")})
                if step.get("malformed"):
                    return self._send(200, b"<html>this is not json")
                model = body.get("model", "m")
                if body.get("stream"):
                    return self._stream(step, model)
                self._send(200, _openai(step, model) if self.path.startswith("/v1/") else _ollama(self.path, step, model))

            def _stream(self, step: Dict[str, Any], model: str) -> None:
                sse = self.path.startswith("/v1/")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(s: str) -> None:
                    b = s.encode()
                    self.wfile.write(b"%x\r\n" % len(b) + b + b"\r\n")
                    self.wfile.flush()

                calls = step.get("tool_calls") or []
                if calls and sse:  # OpenAI streams tool calls as deltas of their own
                    for i, c in enumerate(calls):
                        tc = {"index": i, "id": c.get("id", f"call_{i}"), "type": "function",
                              "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                        delta = {"index": 0, "delta": {"tool_calls": [tc]}, "finish_reason": None}
                        chunk("data: " + json.dumps({"object": "chat.completion.chunk", "model": model, "choices": [delta]}) + "\n\n")
                tokens = step.get("tokens", [step.get("text", "")])
                if calls and not sse:  # Ollama models write them in the text
                    tokens = [_ollama("/api/chat", step, model)["message"]["content"]]
                for tok in tokens:
                    if sse:
                        delta = {"index": 0, "delta": {"content": tok}, "finish_reason": None}
                        chunk("data: " + json.dumps({"object": "chat.completion.chunk", "model": model, "choices": [delta]}) + "\n\n")
                    else:
                        chunk(json.dumps({"model": model, "message": {"role": "assistant", "content": tok}, "response": tok, "done": False}) + "\n")
                    time.sleep(step.get("gap", 0.02))
                if sse:
                    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
                    chunk("data: " + json.dumps({"object": "chat.completion.chunk", "model": model, "choices": [end]}) + "\n\n")
                    chunk("data: [DONE]\n\n")
                else:
                    chunk(json.dumps({"model": model, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}) + "\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, *steps: Dict[str, Any]) -> None:
        with self._lock:
            self.script.extend(steps)

    def posts(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
