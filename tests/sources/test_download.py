"""MovieLens download against a local HTTP server: success, cache hit, checksum, HTTP and name errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from recsys.sources import download as dl
from recsys.sources.download import DATASETS, ChecksumError, DownloadError, RemoteDataset, download


def _zip(top: str, files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(f"{top}/{name}" if top else name, text)
    return buf.getvalue()


class _Server:
    """Serves ``routes`` (path -> bytes) on 127.0.0.1 in a thread and records every requested path."""

    def __init__(self, routes: dict[str, bytes]) -> None:
        self.routes, self.requests = routes, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                outer.requests.append(self.path)
                body = outer.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    routes: dict[str, bytes] = {}
    srv = _Server(routes)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


U_DATA = "1\t10\t5\t881250949\n2\t20\t3\t891717742\n"


@pytest.fixture
def pinned_100k(monkeypatch):
    """ml-100k with the sha256 of the test archive pinned (the real digest belongs to the real file)."""
    body = _zip("ml-100k", {"u.data": U_DATA, "README": "test"})
    spec = RemoteDataset("ml-100k", hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest(), "u.data")
    monkeypatch.setitem(DATASETS, "ml-100k", spec)
    return body


def test_download_extracts_and_second_call_is_a_cache_hit(server, tmp_path, pinned_100k):
    server.routes["/ml-100k.zip"] = pinned_100k
    path = download("ml-100k", tmp_path, url=server.url("/ml-100k.zip"), progress=False)
    assert path == tmp_path / "ml-100k"
    assert (path / "u.data").read_text() == U_DATA
    assert (tmp_path / "ml-100k.sha256").read_text().strip() == DATASETS["ml-100k"].sha256
    assert server.requests == ["/ml-100k.zip"]
    assert download("ml-100k", tmp_path, url=server.url("/ml-100k.zip"), progress=False) == path
    assert server.requests == ["/ml-100k.zip"]  # no second request
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cached_archive_is_reextracted_without_network(server, tmp_path, pinned_100k):
    server.routes["/ml-100k.zip"] = pinned_100k
    path = download("ml-100k", tmp_path, url=server.url("/ml-100k.zip"), progress=False)
    (path / "u.data").unlink()
    (tmp_path / "ml-100k.sha256").unlink()  # an interrupted extraction leaves no record
    assert (download("ml-100k", tmp_path, url=server.url("/ml-100k.zip"), progress=False) / "u.data").is_file()
    assert server.requests == ["/ml-100k.zip"]


def test_checksum_mismatch_names_both_digests_and_deletes_the_file(server, tmp_path):
    body = _zip("ml-100k", {"u.data": U_DATA})  # not the real archive, so the pinned sha256 differs
    server.routes["/ml-100k.zip"] = body
    with pytest.raises(ChecksumError) as err:
        download("ml-100k", tmp_path, url=server.url("/ml-100k.zip"), progress=False)
    msg = str(err.value)
    assert DATASETS["ml-100k"].sha256 in msg and hashlib.sha256(body).hexdigest() in msg
    assert not (tmp_path / "ml-100k.zip").exists() and not (tmp_path / "ml-100k").exists()


def test_trust_on_first_use_records_the_digest_and_then_enforces_it(server, tmp_path):
    first = _zip("ml-latest-small", {"ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"})
    server.routes["/small.zip"] = first
    download("ml-latest-small", tmp_path, url=server.url("/small.zip"), progress=False)
    assert (tmp_path / "ml-latest-small.sha256").read_text().strip() == hashlib.sha256(first).hexdigest()
    # the cached archive is replaced by another file and the extracted folder is gone: the record catches it
    (tmp_path / "ml-latest-small.zip").write_bytes(_zip("ml-latest-small", {"ratings.csv": "changed\n"}))
    server.routes["/small.zip"] = _zip("ml-latest-small", {"ratings.csv": "changed too\n"})
    shutil.rmtree(tmp_path / "ml-latest-small")
    with pytest.raises(ChecksumError, match="delete ml-latest-small.sha256"):
        download("ml-latest-small", tmp_path, url=server.url("/small.zip"), progress=False)


def test_md5_is_checked_when_no_sha256_is_pinned(server, tmp_path):
    server.routes["/ml-1m.zip"] = _zip("ml-1m", {"ratings.dat": "1::1193::5::978300760\n"})
    with pytest.raises(ChecksumError, match=f"md5 mismatch, expected {DATASETS['ml-1m'].md5}"):
        download("ml-1m", tmp_path, url=server.url("/ml-1m.zip"), progress=False)


def test_http_404_is_reported_with_code_and_url(server, tmp_path):
    url = server.url("/missing.zip")
    with pytest.raises(DownloadError, match=r"HTTP 404 .*missing\.zip"):
        download("ml-100k", tmp_path, url=url, progress=False)
    assert list(tmp_path.iterdir()) == []  # the partial file was removed


def test_connection_refused_is_a_download_error(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="could not download .*put ml-100k.zip into"):
        download("ml-100k", tmp_path, url=f"http://127.0.0.1:{port}/ml-100k.zip", progress=False, timeout=5)


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'ml-20k'.*'ml-100k', 'ml-1m', 'ml-latest-small'"):
        download("ml-20k", tmp_path)


def test_archive_without_the_expected_file_or_not_a_zip(server, tmp_path, monkeypatch):
    wrong = _zip("ml-latest-small", {"movies.csv": "x\n"})
    server.routes["/wrong.zip"], server.routes["/junk.zip"] = wrong, b"this is not a zip"
    with pytest.raises(DownloadError, match="does not contain ml-latest-small/ratings.csv"):
        download("ml-latest-small", tmp_path / "a", url=server.url("/wrong.zip"), progress=False)
    with pytest.raises(DownloadError, match="not a valid zip"):
        download("ml-latest-small", tmp_path / "b", url=server.url("/junk.zip"), progress=False)
    assert not Path(tmp_path / "b" / "ml-latest-small.zip").exists()


def test_default_url_points_at_grouplens(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(dl, "_fetch", lambda url, *a: seen.append(url) or (_ for _ in ()).throw(DownloadError("x")))
    with pytest.raises(DownloadError):
        download("ml-1m", tmp_path, progress=False)
    assert seen == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
