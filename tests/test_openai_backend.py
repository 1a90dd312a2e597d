"""The OpenAI-compatible backend against a real HTTP server on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tagpr.generation import SamplingParams, make_backend
from tagpr.generation.openai_http import BackendError


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers chat and text completions; fails the first ``fail_first`` requests with 503."""

    state = {"requests": [], "fail_first": 0, "in_flight": 0, "max_in_flight": 0}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.lock:
            st = self.state
            st["requests"].append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
            st["in_flight"] += 1
            st["max_in_flight"] = max(st["max_in_flight"], st["in_flight"])
            fail = st["fail_first"] > 0
            if fail:
                st["fail_first"] -= 1
        done = False
        try:
            import time

            time.sleep(0.05)
            with self.lock:  # the work is done before the reply goes out: a client that has its reply may
                self.state["in_flight"] -= 1  # send the next request before this thread would get here
            done = True
            if fail:
                self.send_response(503)
                self.end_headers()
                self.wfile.write(b"busy")
                return
            if self.path.endswith("/chat/completions") and body.get("continue_final_message"):
                # vLLM resumes the last (assistant) message; it strips the stop string and names it
                partial = body["messages"][-1]["content"]
                choices = [{"index": 0, "message": {"role": "assistant", "content": f"after {len(partial)} chars"},
                            "finish_reason": "stop", "stop_reason": (body.get("stop") or [None])[-1]}]
            elif self.path.endswith("/chat/completions"):
                text = "echo: " + body["messages"][-1]["content"]
                choices = [{"index": i, "message": {"role": "assistant", "content": f"{text} #{i}"}, "finish_reason": "stop"}
                           for i in range(body.get("n", 1))]
            elif self.path.endswith("/completions"):
                choices = [{"index": 0, "text": "text: " + body["prompt"] + " STOP tail", "finish_reason": "stop"}]
            else:
                self.send_response(404)
                self.end_headers()
                return
            out = json.dumps({"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        finally:
            if not done:
                with self.lock:
                    self.state["in_flight"] -= 1


@pytest.fixture
def server():
    FakeOpenAI.state.update(requests=[], fail_first=0, in_flight=0, max_in_flight=0)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_chat_concurrency_order_and_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    b = make_backend("openai", "tiny", base_url=server, concurrency=4)
    prompts = [f"p{i}" for i in range(12)]
    out = b.generate(prompts, SamplingParams(max_new_tokens=7, temperature=0.7, n=2, seed=3))
    assert [g[0].text for g in out] == [f"echo: p{i} #0" for i in range(12)]  # prompt order kept
    assert [g[1].text for g in out][:2] == ["echo: p0 #1", "echo: p1 #1"]
    reqs = FakeOpenAI.state["requests"]
    assert len(reqs) == 12 and reqs[0]["auth"] == "Bearer sk-test"
    assert reqs[0]["body"]["max_tokens"] == 7 and reqs[0]["body"]["temperature"] == 0.7 and reqs[0]["body"]["n"] == 2
    assert 1 < FakeOpenAI.state["max_in_flight"] <= 4


def test_retries_transient_errors(server):
    FakeOpenAI.state["fail_first"] = 2
    b = make_backend("openai", "tiny", base_url=server, concurrency=1, backoff=0.01)
    out = b.generate(["hello"], SamplingParams())
    assert out[0][0].text == "echo: hello #0"
    assert len(FakeOpenAI.state["requests"]) == 3


def test_gives_up_with_clear_error(server):
    FakeOpenAI.state["fail_first"] = 10
    b = make_backend("openai", "tiny", base_url=server, concurrency=1, max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="gave up after 2 attempts.*HTTP 503"):
        b.generate(["hello"], SamplingParams())


def test_text_completions_and_stop(server):
    b = make_backend("openai", "tiny", base_url=server, chat=False)
    out = b.generate(["abc"], SamplingParams(stop=("STOP",)))
    assert out[0][0].text == "text: abc "


def test_unreachable_server_fails_fast():
    b = make_backend("openai", "tiny", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(BackendError, match="ConnectError"):
        b.generate(["x"], SamplingParams())


def test_continue_generation_resumes_the_assistant_turn(server):
    b = make_backend("openai", "tiny", base_url=server, concurrency=2)
    out = b.continue_generation([("question", "### 1. Task\nabc"), ("q2", "xy")],
                                SamplingParams(max_new_tokens=5, stop=("### 2.", "### 3.")))
    assert [g[0].text for g in out] == ["after 15 chars", "after 2 chars"]
    assert out[0][0].stop_reason == "### 3." and out[0][0].finish_reason == "stop"
    body = FakeOpenAI.state["requests"][0]["body"]
    assert body["messages"][-1]["role"] == "assistant"
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    # text completions append the partial turn to the prompt
    t = make_backend("openai", "tiny", base_url=server, chat=False)
    assert t.continue_generation([("abc", "-def")], SamplingParams(stop=("STOP",)))[0][0].text == "text: abc-def "
