"""Downloads: URL layout, HTML answers rejected, resume with Range, fast failure without network."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tagpr.data.download import DownloadError, download_split, fetch, official_urls

QUESTIONS = json.dumps([{"id": "1", "input": "Paraphrase the following tweet: hi", "profile": [{"text": "a"}]}]).encode()
OUTPUTS = json.dumps({"task": "LaMP_7", "golds": [{"id": "1", "output": "hey"}]}).encode()


class Host(BaseHTTPRequestHandler):
    files: dict = {}
    log: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.log.append((self.path, self.headers.get("range")))
        body = self.files.get(self.path)
        if body is None:  # like the official host: a wrong path answers 200 with an HTML page
            page = b"<!DOCTYPE html><html><body>Index of /</body></html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        rng = self.headers.get("range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            part = body[start:]
            self.send_response(206)
            self.send_header("content-range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            part = body
            self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


@pytest.fixture
def host():
    Host.files = {"/LaMP/LaMP_7/dev/dev_questions.json": QUESTIONS, "/LaMP/LaMP_7/dev/dev_outputs.json": OUTPUTS}
    Host.log = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Host)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/LaMP"
    srv.shutdown()
    srv.server_close()


def test_official_url_layout():
    u = official_urls("LaMP-2", "dev")
    assert u["questions"].endswith("/LaMP_2/new/dev/dev_questions.json")
    assert official_urls("LaMP-7", "train", time_based=True)["outputs"].endswith("/time/LaMP_7/train/train_outputs.json")
    assert "outputs" not in official_urls("LaMP-3", "test")


def test_download_and_validate(host, tmp_path):
    paths = download_split("LaMP-7", "dev", tmp_path, base_url=host)
    assert paths["questions"].read_bytes() == QUESTIONS and paths["outputs"].read_bytes() == OUTPUTS
    n = len(Host.log)
    download_split("LaMP-7", "dev", tmp_path, base_url=host)  # valid files are kept, nothing fetched
    assert len(Host.log) == n


def test_html_answer_is_rejected(host, tmp_path):
    with pytest.raises(DownloadError, match="HTML page"):
        download_split("LaMP-3", "dev", tmp_path, base_url=host)


def test_resume_with_range(host, tmp_path):
    dest = tmp_path / "q.json"
    (tmp_path / "q.json.part").write_bytes(QUESTIONS[:20])
    fetch(f"{host}/LaMP_7/dev/dev_questions.json", dest)
    assert dest.read_bytes() == QUESTIONS
    assert Host.log[-1][1] == "bytes=20-"


def test_no_network_fails_fast(tmp_path):
    import time

    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="cannot reach"):
        download_split("LaMP-7", "dev", tmp_path, base_url="http://127.0.0.1:9/LaMP")
    assert time.perf_counter() - t0 < 15
