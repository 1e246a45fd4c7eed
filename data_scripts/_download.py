"""Resumable, verified HTTP downloads for the data scripts (standard library + tqdm).

``download(url, dest)``: the file goes to ``dest + ".part"`` first; an interrupted download resumes
with an HTTP ``Range`` request from the bytes already there (a server that ignores Range restarts
it); when the size matches ``Content-Length`` and the MD5 matches (the one given, or the server's
``x-goog-hash: md5=...`` for Google Cloud Storage), the part file is renamed onto ``dest``. A
``dest`` that already exists and verifies is not downloaded again. Any mismatch is an error that
names the file, the expected and the actual value, and leaves ``dest`` absent.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Dict, Optional

CHUNK = 1 << 20
USER_AGENT = "seqmamba-data-scripts/1.0"


def _request(url: str, method: str = "GET", headers: Optional[Dict[str, str]] = None):
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=60)


def remote_info(url: str) -> Dict[str, Optional[str]]:
    """Size (Content-Length) and MD5 (hex, from x-goog-hash when the server gives one) of ``url``."""
    try:
        with _request(url, "HEAD") as resp:
            size = resp.headers.get("Content-Length")
            md5 = None
            for part in resp.headers.get_all("x-goog-hash") or []:
                for item in part.split(","):
                    key, _, value = item.strip().partition("=")
                    if key == "md5":
                        md5 = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4)).hex()
            return {"size": size, "md5": md5}
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise RuntimeError(f"{url}: cannot connect ({err.reason})") from None


def file_md5(path: str, desc: str = "md5") -> str:
    from tqdm import tqdm

    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc=desc,
                                     leave=False) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _verify(path: str, size: Optional[int], md5: Optional[str], url: str) -> None:
    actual = os.path.getsize(path)
    if size is not None and actual != size:
        raise RuntimeError(f"{path}: {actual} bytes, expected {size} (from {url}); delete it and run again")
    if md5:
        got = file_md5(path, f"md5 {os.path.basename(path)}")
        if got != md5.lower():
            raise RuntimeError(f"{path}: MD5 {got}, expected {md5} (from {url}); the download is corrupt")


def download(url: str, dest: str, md5: Optional[str] = None, retries: int = 5) -> str:
    """Download ``url`` to ``dest`` (resumable, verified; see the module docstring). Returns ``dest``."""
    from tqdm import tqdm

    info = remote_info(url)
    size = int(info["size"]) if info["size"] else None
    md5 = md5 or info["md5"]
    if os.path.exists(dest):
        _verify(dest, size, md5, url)
        print(f"{dest}: present and verified")
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    for attempt in range(1, retries + 1):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if size is not None and have > size:
            os.remove(part)
            have = 0
        if size is not None and have == size:
            break
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with _request(url, headers=headers) as resp:
                if have and resp.status != 206:  # the server ignored the range: start over
                    have = 0
                mode = "ab" if have else "wb"
                with open(part, mode) as out, tqdm(total=size, initial=have, unit="B", unit_scale=True,
                                                   desc=os.path.basename(dest)) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        bar.update(len(block))
            if size is None or os.path.getsize(part) == size:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if attempt == retries:
                raise RuntimeError(f"{url}: download failed after {retries} attempts ({err}); run again to "
                                   f"resume from {part}") from None
            print(f"{url}: {err}; resuming in {2 ** attempt} s (attempt {attempt + 1}/{retries})")
            time.sleep(2 ** attempt)
    _verify(part, size, md5, url)
    os.replace(part, dest)
    return dest


def gunzip(src: str, dest: str) -> str:
    """Decompress ``src`` to ``dest`` through ``dest + '.part'`` (never a half-written ``dest``)."""
    from tqdm import tqdm

    if os.path.exists(dest):
        print(f"{dest}: present")
        return dest
    part = dest + ".part"
    with gzip.open(src, "rb") as fin, open(part, "wb") as fout, tqdm(
            total=os.path.getsize(src), unit="B", unit_scale=True, desc=f"gunzip {os.path.basename(src)}") as bar:
        raw = fin.fileobj  # compressed bytes read so far drive the bar
        last = 0
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            pos = raw.tell()
            bar.update(pos - last)
            last = pos
    os.replace(part, dest)
    return dest


def copy_stream(src, dest: str) -> None:
    part = dest + ".part"
    with open(part, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    os.replace(part, dest)
