"""Fingerprints of data folders: has a data set changed since the last look?

A fingerprint is a sha256 over the sorted list of the folder's files (relative path, size in bytes,
modification time in nanoseconds), followed by the sha256 of the contents of a few named small files
(a data set's ground truth). The listing catches added, removed, resized and touched files; the
content hashes catch an edit that keeps a file's size and modification time (a copy with `cp -p` or
`rsync -t`, a file system with coarse timestamps). Large files are never read: hashing Visual
Genome's 1.7 GB of JSON on every look would take many seconds and push other data out of the page cache, and a new
download changes their sizes and times anyway.

`content_fingerprint` answers a different question, "would reading the folder again give the same
data?": it leaves modification times out (a data set written again byte for byte, such as the
synthetic world on every `make demo`, keeps its fingerprint), lists pictures by path and size, and
hashes the contents of every other file (the annotations the readers parse: several seconds for Visual
Genome's 1.7 GB of JSON, against the minutes their ingestion takes). The raw assets return it in
their Dagster data version, so re-reading unchanged data leaves everything downstream fresh.

Hidden files and folders (a leading dot: `.DS_Store`, editor swap files) are not part of a data set
and are left out. Symbolic links are followed, each folder listed once. A missing folder has the
fingerprint `MISSING`. Listing 20,000 files took 0.1-0.2 s on the reference machine, so Visual
Genome's 108k images take about a second.
"""

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from emo_pipeline.core.digests import file_sha256

MISSING = "missing"


@dataclass(frozen=True)
class Fingerprint:
    digest: str       # sha256 hex, or MISSING
    files: int = 0
    bytes: int = 0

    @property
    def missing(self) -> bool:
        return self.digest == MISSING


def _listing(root: Path) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every file under `root`, sorted."""
    entries = []
    folders = [("", str(root))]
    top = root.stat()
    visited = {(top.st_dev, top.st_ino)}  # each folder once: a link back up must not loop forever
    while folders:
        prefix, folder = folders.pop()
        try:
            with os.scandir(folder) as scan:
                children = list(scan)
        except (FileNotFoundError, NotADirectoryError):  # removed while we walked
            continue
        for entry in children:
            if entry.name.startswith("."):
                continue
            try:
                stat = entry.stat()  # follows symbolic links
                if entry.is_dir():
                    if (stat.st_dev, stat.st_ino) not in visited:
                        visited.add((stat.st_dev, stat.st_ino))
                        folders.append((f"{prefix}{entry.name}/", entry.path))
                    continue
            except FileNotFoundError:  # removed while we walked, or a dangling link
                continue
            entries.append((f"{prefix}{entry.name}", stat.st_size, stat.st_mtime_ns))
    entries.sort()
    return entries


# Pictures are listed by path and size only: hashing Visual Genome's 108k pictures (15 GB) on every
# look would take minutes, and a picture replaced by another of the very same size is rare.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def content_fingerprint(root: Path) -> Fingerprint:
    """A fingerprint of what the folder holds, not of when it was written: every file's relative path
    and size, and the sha256 of every file that is not a picture (`PICTURE_SUFFIXES`)."""
    root = Path(root)
    if not root.is_dir():
        return Fingerprint(MISSING)
    entries = _listing(root)
    digest = hashlib.sha256()
    for relative, size, _ in entries:
        content = "-" if relative.lower().endswith(PICTURE_SUFFIXES) else file_sha256(root / relative)
        digest.update(f"{relative}\t{size}\t{content}\n".encode())
    return Fingerprint(digest.hexdigest(), files=len(entries), bytes=sum(size for _, size, _ in entries))


def fingerprint_folder(root: Path, hashed: Iterable[str] = ()) -> Fingerprint:
    """The fingerprint of every file under `root`, plus the content hash of each `hashed` file
    (paths relative to `root`; an absent one counts as absent)."""
    root = Path(root)
    if not root.is_dir():
        return Fingerprint(MISSING)
    entries = _listing(root)
    digest = hashlib.sha256()
    for relative, size, mtime_ns in entries:
        digest.update(f"{relative}\t{size}\t{mtime_ns}\n".encode())
    for relative in sorted(hashed):
        path = root / relative
        content = file_sha256(path) if path.is_file() else "absent"
        digest.update(f"sha256\t{relative}\t{content}\n".encode())
    return Fingerprint(digest.hexdigest(), files=len(entries), bytes=sum(size for _, size, _ in entries))
