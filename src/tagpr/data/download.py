"""Download official LaMP files, checked and resumable.

The official host answers a wrong path with HTTP 200 and an HTML page, so every download is checked:
the content type and first bytes must not be HTML, the size must match ``Content-Length``, and the
result must parse as the expected LaMP JSON.  Partial downloads are kept as ``*.part`` and resumed
with an HTTP ``Range`` request.  Without network the first connection fails fast with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tagpr.data.loading import LaMPDataError, load_golds, load_questions
from tagpr.tasks import get_task

OFFICIAL_BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"


class DownloadError(RuntimeError):
    pass


def official_urls(task: str, split: str, time_based: bool = False, base_url: str = OFFICIAL_BASE_URL) -> dict[str, str]:
    """``{"questions": url, "outputs": url}`` (no outputs for ``test``: its golds are withheld)."""
    t = get_task(task)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be train, dev or test, not {split!r}")
    if t.data is None:
        raise ValueError(f"{t.name} has no official download (its task record has no data.folder)")
    root = f"{base_url.rstrip('/')}/{'time/' if time_based else ''}{t.data.folder}/{split}"
    urls = {"questions": f"{root}/{split}_questions.json"}
    if split != "test":
        urls["outputs"] = f"{root}/{split}_outputs.json"
    return urls


def fetch(url: str, dest: str | Path, client: httpx.Client | None = None, chunk: int = 1 << 20) -> Path:
    """Stream ``url`` to ``dest`` via ``dest.part``, resuming a previous partial download."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True)
    try:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with client.stream("GET", url, headers=headers) as r:
                if r.status_code == 416:  # nothing left to fetch
                    os.replace(part, dest)
                    return dest
                if r.status_code not in (200, 206):
                    raise DownloadError(f"{url}: HTTP {r.status_code}")
                ctype = r.headers.get("content-type", "")
                if "html" in ctype.lower():
                    raise DownloadError(f"{url}: the server answered with an HTML page ({ctype}), not a LaMP file; "
                                        "the path is probably wrong")
                resumed = r.status_code == 206
                if not resumed:
                    have = 0
                expected = r.headers.get("content-length")
                total = have + int(expected) if expected is not None else None
                with open(part, "ab" if resumed else "wb") as fh:
                    first = True
                    for block in r.iter_bytes(chunk):
                        if first and not resumed and block.lstrip()[:1] == b"<":
                            raise DownloadError(f"{url}: the content is HTML/XML, not a LaMP JSON file")
                        first = False
                        fh.write(block)
        except httpx.TransportError as e:
            raise DownloadError(f"cannot reach {httpx.URL(url).host} ({type(e).__name__}: {e}); "
                                f"check the network, or place the files by hand (partial data kept in {part})") from e
        size = part.stat().st_size
        if total is not None and size != total:
            raise DownloadError(f"{url}: got {size} bytes of {total}; run again to resume")
        os.replace(part, dest)
        return dest
    finally:
        if own:
            client.close()


def download_split(task: str, split: str, out_dir: str | Path, time_based: bool = False,
                   base_url: str = OFFICIAL_BASE_URL, client: httpx.Client | None = None) -> dict[str, Path]:
    """Fetch and validate one split into ``out_dir/LaMP_N/`` (already valid files are kept)."""
    t = get_task(task)
    d = Path(out_dir) / t.name.replace("-", "_")
    paths: dict[str, Path] = {}
    for kind, url in official_urls(t.name, split, time_based, base_url).items():
        dest = d / f"{split}_{kind}.json"
        if dest.exists():
            try:
                (load_questions if kind == "questions" else load_golds)(dest, t)
                paths[kind] = dest
                continue
            except LaMPDataError:
                dest.unlink()
        fetch(url, dest, client)
        try:
            (load_questions if kind == "questions" else load_golds)(dest, t)
        except LaMPDataError as e:
            bad = dest.with_name(dest.name + ".invalid")
            os.replace(dest, bad)
            raise DownloadError(f"{url}: downloaded file is not valid LaMP data ({e}); kept as {bad}") from None
        paths[kind] = dest
    return paths
