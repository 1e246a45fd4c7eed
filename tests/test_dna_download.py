"""data_scripts/_download.py against a local HTTP server with Range support: resume, verification."""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_scripts"))
from _download import download, gunzip  # noqa: E402

PAYLOAD = os.urandom(300_000)


class _Handler(BaseHTTPRequestHandler):
    served_ranges = []

    def log_message(self, *args):
        pass

    def _head(self, start=0):
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)) if self.command == "GET" else str(len(PAYLOAD)))
        self.end_headers()
        return body

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            _Handler.served_ranges.append(start)
        self.wfile.write(self._head(start))


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/file.bin"
    httpd.shutdown()


def test_download_resumes_from_a_partial_file_and_verifies(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:123_456])  # an interrupted earlier download
    download(server, str(dest), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD and _Handler.served_ranges[-1] == 123_456
    assert not (tmp_path / "file.bin.part").exists()
    download(server, str(dest), md5=hashlib.md5(PAYLOAD).hexdigest())  # present and verified: no refetch


def test_a_checksum_mismatch_fails_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "bad.bin"
    with pytest.raises(RuntimeError, match="MD5 .* expected 0+"):
        download(server, str(dest), md5="0" * 32)
    assert not dest.exists()


def test_gunzip_writes_the_whole_file(tmp_path):
    import gzip

    src = tmp_path / "x.fa.gz"
    src.write_bytes(gzip.compress(b">c\nACGT\n" * 1000))
    out = gunzip(str(src), str(tmp_path / "x.fa"))
    assert open(out, "rb").read() == b">c\nACGT\n" * 1000
