"""A minimal OpenAI-protocol server for tests: stdlib ``http.server`` on 127.0.0.1, in a thread, on a free port.

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` with the OpenAI JSON shapes. Its policy reads the
admissible commands from the last user message and answers ``REASON: ...\\nACTION: <command>``. It can fail the
first requests with an HTTP status, stall past a client's timeout, require a key, ignore ``n``, and it records
every request (path, headers, JSON body) and the most requests it had in flight at once. With ``gather=k`` it
holds the chat requests until ``k`` of them are in flight at once, so a test of concurrency does not depend on
how fast the threads of a loaded machine happen to run.

    with OpenAITestServer(first_command, fail_first=2) as server:
        agent = OpenAICompatibleAgent(OpenAIAgentConfig(base_url=server.url))
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Messages = list[dict[str, str]]
#: A policy answers a conversation (the request's messages) with the assistant's text.
Policy = Callable[[Messages], str]


def admissible_commands(messages: Messages) -> list[str]:
    """Return the commands listed in the last user message ("Admissible commands: a, b, c")."""
    last = [m["content"] for m in messages if m["role"] == "user"][-1]
    listed = last.rsplit("Admissible commands:", 1)[-1]
    return [command.strip() for command in listed.split(",") if command.strip()]


def first_command(messages: Messages) -> str:
    """Answer the first admissible command, exactly."""
    return f"REASON: It is listed first.\nACTION: {admissible_commands(messages)[0]}"


def turn(messages: Messages) -> int:
    """Return the number of turns already played in the conversation (its assistant messages)."""
    return sum(m["role"] == "assistant" for m in messages)


class OpenAITestServer:
    """The server; ``url`` is its API root (``http://127.0.0.1:<port>/v1``)."""

    def __init__(
        self,
        policy: Policy = first_command,
        *,
        model: str = "test-model",
        fail_first: int = 0,
        fail_status: int = 500,
        retry_after: str | None = None,
        stall_first: int = 0,
        stall_s: float = 0.0,
        delay_s: float = 0.0,
        api_key: str | None = None,
        max_n: int | None = None,
        gather: int = 0,
        gather_timeout_s: float = 30.0,
    ) -> None:
        """Start nothing yet (``with`` starts the server); the keywords script its answers.

        ``gather``: hold chat requests until that many are in flight at once, then answer them all (and every
        later one at once). After ``gather_timeout_s`` without that many (a client that does not send them
        concurrently), it stops holding, so such a test fails on ``max_in_flight`` instead of hanging.
        """
        self.policy, self.model = policy, model
        self.fail_first, self.fail_status, self.retry_after = fail_first, fail_status, retry_after
        self.stall_first, self.stall_s, self.delay_s = stall_first, stall_s, delay_s
        self.api_key, self.max_n = api_key, max_n
        self.gather, self.gather_timeout_s, self._gathered = gather, gather_timeout_s, threading.Event()
        #: Every request: {"path", "headers" (lower-cased names), "body"} (body None for GET).
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock, self._stopping = threading.Lock(), threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def completions(self) -> list[dict[str, Any]]:
        """The chat-completion requests received."""
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()  # wakes stalled handlers
        self._gathered.set()  # and held ones
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _answer(self, headers: dict[str, str], body: dict[str, Any], index: int) -> tuple[int, dict[str, Any]]:
        """Return (status, JSON) for the ``index``-th chat request."""
        if self.gather and not self._gathered.wait(self.gather_timeout_s):
            self._gathered.set()  # not that many came at once: stop holding
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            # Like some real servers, echo what was sent: the client must not repeat it anywhere.
            return 401, _error(f"Incorrect API key provided: {headers.get('authorization')}", "invalid_api_key")
        if index < self.stall_first:
            self._stopping.wait(self.stall_s)
        if index < self.fail_first:
            return self.fail_status, _error(f"Scripted failure {index + 1} of {self.fail_first}.", "server_error")
        if self.delay_s:
            time.sleep(self.delay_s)
        n = int(body.get("n") or 1)
        n = min(n, self.max_n) if self.max_n else n
        texts = [self.policy(body["messages"]) for _ in range(n)]
        choices = []
        for i, text in enumerate(texts):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
            if body.get("logprobs"):
                choice["logprobs"] = {
                    "content": [{"token": w, "logprob": -0.25, "bytes": None, "top_logprobs": []} for w in text.split()]
                }
            choices.append(choice)
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        completion_tokens = sum(len(t.split()) for t in texts)
        return 200, {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": choices,
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet)
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429 and server.retry_after is not None:
                        self.send_header("Retry-After", server.retry_after)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.requests.append({"path": self.path, "headers": _lower(self.headers), "body": None})
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, _error(f"No route {self.path}.", "not_found"))
                model = {"id": server.model, "object": "model", "created": 0, "owned_by": "prm-gym-tests"}
                self._send(200, {"object": "list", "data": [model]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": _lower(self.headers), "body": body})
                    index = len(server.completions) - 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    if server.gather and server.in_flight >= server.gather:
                        server._gathered.set()
                try:
                    if self.path.rstrip("/") != "/v1/chat/completions":
                        answer = 404, _error(f"No route {self.path}.", "not_found")
                    else:
                        answer = server._answer(_lower(self.headers), body, index)
                finally:
                    # Out of flight before the answer leaves: a client that sends its next request as soon as it
                    # reads this answer must never be counted with this one.
                    with server._lock:
                        server.in_flight -= 1
                self._send(*answer)

        return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
