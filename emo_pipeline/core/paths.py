"""Paths read from a data file, kept inside the data set's folder.

A data file (a label file, a split list, an annotation) names files relative to its data set's root.
Such a path is accepted or refused on how it is written: absolute paths and `..` components that climb
above the root are refused; everything else is joined to the root lexically (`a/../b` is `b`) and
opened as it is. Symbolic links are not resolved for the decision: a link the user put inside the root
(`images/anger -> /other/disk/anger`, a common way to spread a download over disks) is their choice
and is followed, while a path that a data file writes cannot climb out.

When a file under the root cannot be reached, `link_problem` says whether a link on the way is the
reason (dangling, a loop), so a rejection can name the link and where it points.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class OutsideRoot(ValueError):
    """A path from a data file that is absolute or climbs above its root; the message says which."""


def path_under(root: str | os.PathLike[str], written: str) -> Path:
    """`root` joined with `written` (a relative path from a data file), normalised lexically.

    `/` and `\\` both separate components. Raises OutsideRoot for an empty or absolute path (a drive
    letter included) and for a `..` that would leave `root`; the file system is not consulted.
    """
    text = written.replace("\\", "/")
    if not text.strip():
        raise OutsideRoot("empty path")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(written).drive:
        raise OutsideRoot("absolute path")
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part == "..":
            if not parts:
                raise OutsideRoot("its '..' climbs above the root")
            parts.pop()
        elif part != ".":
            parts.append(part)
    if not parts:
        raise OutsideRoot("names the root itself, not a file under it")
    return Path(root).joinpath(*parts)


def link_problem(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """Why `path` (under `root`) cannot be reached because of a symbolic link on the way, or None.

    Each component below `root` is checked in turn; the first link that cannot be followed is named
    relative to `root`, with the target as the link holds it (and, for a relative target, the place it
    means). A link to a folder where a file is expected is left to the caller's own message.
    """
    root, path = Path(root), Path(path)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if not current.is_symlink():
            if not current.exists():
                return None  # a plain component is missing: no link to blame
            continue
        target = os.readlink(current)
        shown = target if os.path.isabs(target) else f"{target} ({os.path.normpath(current.parent / target)})"
        name = current.relative_to(root).as_posix()
        try:
            current.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{name} is a symbolic link to {shown}, a loop of links"
            if exc.errno == errno.ENOENT:
                return f"{name} is a symbolic link to {shown}, which does not exist"
            return f"{name} is a symbolic link to {shown}, which cannot be read ({exc.strerror})"
    return None
