"""Mirroring the repository's source files into the cache: resumable, retried, verified against downloads.json."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from covid_sweep.core.files import write_text_atomically
from covid_sweep.data.fetch.lock import locked
from covid_sweep.data.fetch.repository import check_zip
from covid_sweep.data.fetch.source import (
    MANUAL_HELP,
    SOURCE_FILES,
    FetchError,
    say,
)

RECORD = "downloads.json"
TIMEOUT_S = 60
ATTEMPTS = 4
CHUNK = 1 << 20
USER_AGENT = "covid-sweep (+https://github.com/UCSD-AI4H/COVID-CT data fetcher)"


class _Interrupted(Exception):
    """A transfer stopped part-way; the .part file keeps what arrived so the next try resumes."""


def download_repo(base_url: str, cache: Path) -> Path:
    """Mirror the source files into cache (laid out like the repository), verified against downloads.json."""
    with locked(cache / ".lock"):
        record = _read_record(cache)
        for rel in SOURCE_FILES:
            target = cache / rel
            if _cached_ok(target, record.get(rel)):
                continue
            url = f"{base_url}/{urllib.parse.quote(rel)}"
            _download_verified(url, target)
            # No checksums are published upstream, so the first good download is the reference that
            # later uses are checked against (catches a truncated or damaged cache, not a changed upstream).
            record[rel] = {"url": url, "size": target.stat().st_size, "sha256": _sha256(target)}
            _write_record(cache, record)
    return cache


def _read_record(cache: Path) -> dict:
    try:
        return json.loads((cache / RECORD).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        say(f"warning: {cache / RECORD} is unreadable; cached downloads will be fetched again")
        return {}


def _write_record(cache: Path, record: dict) -> None:
    write_text_atomically(cache / RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n", force=True)


def _cached_ok(target: Path, entry: dict | None) -> bool:
    if not target.is_file():
        return False
    if entry and entry.get("size") == target.stat().st_size and entry.get("sha256") == _sha256(target):
        return True
    # unrecorded files come from a crash between download and record: not trusted either
    say(f"warning: cached {target} does not match the size/sha256 recorded at its first download; "
         "downloading it again")
    target.unlink()
    return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_verified(url: str, target: Path) -> None:
    """Download url to target via target.part (resumable); a zip is tested before it takes target's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _download_once(url, part)
            break
        except _Interrupted as err:
            say(f"{url}: {err}; retrying ({attempt}/{ATTEMPTS})")
    else:
        raise FetchError(f"{url}: the download was interrupted {ATTEMPTS} times; run the same command again "
                         f"to resume from {part}. {MANUAL_HELP}")
    if target.suffix == ".zip":
        try:
            check_zip(part, label=url)
        except FetchError as err:
            part.unlink()
            raise FetchError(f"{err} The corrupt download was deleted; run again to download it afresh.") from None
    os.replace(part, target)


def _download_once(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            _restart_after_416(err, part, have)
            return
        raise FetchError(f"cannot reach {url} (HTTP {err.code} {err.reason}). {MANUAL_HELP}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, refused, timeout, reset
        reason = getattr(err, "reason", None) or err
        raise FetchError(f"cannot reach {url} ({reason}). {MANUAL_HELP}") from None
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if response.status == 206 and not resumed:
            part.unlink(missing_ok=True)  # a range we did not ask for cannot be appended to what we have
            raise _Interrupted("the server sent an unexpected byte range")
        start = have if resumed else 0  # a server that ignores Range sends it all (200): start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        _stream(response, part, "ab" if resumed else "wb", start, total)
    size = part.stat().st_size
    if total is not None and size < total:
        # http.client's read(n) returns short data, not an error, when the peer closes early
        raise _Interrupted(f"connection closed after {size} of {total} bytes")


def _stream(response, part: Path, mode: str, start: int, total: int | None) -> None:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(response.url).path)).name
    try:
        with part.open(mode) as fh, tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True,
                                         unit_divisor=1024, file=sys.stderr, leave=False) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
    except (OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"transfer failed ({err})") from err


def _range_start(response) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _restart_after_416(err: urllib.error.HTTPError, part: Path, have: int) -> None:
    """Range not satisfiable: the .part is already whole (crash before rename) or stale; else start over."""
    if err.headers.get("Content-Range", "") == f"bytes */{have}":
        return
    part.unlink()
    raise _Interrupted("the server cannot resume this partial file")
