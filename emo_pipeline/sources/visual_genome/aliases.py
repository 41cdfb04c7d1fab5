"""The Visual Genome alias files: one synonym group per line, the first entry canonical."""

from __future__ import annotations

import re
from pathlib import Path

from emo_pipeline.core.rejection import Rejection
from emo_pipeline.sources.visual_genome.schemas import WS_CLASS

_WS_RE = re.compile(WS_CLASS + "+")


def _normalise(text: str) -> str:
    """Python twin of the SQL `sql._norm`: lower-case, strip, collapse whitespace."""
    return _WS_RE.sub(" ", text).strip(" ").lower()


def read_aliases(path: Path) -> tuple[dict[str, str], list[Rejection]]:
    """synonym -> canonical name, from one synonym group per line (first entry canonical)."""
    aliases: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[Rejection] = []
    if not path.is_file():
        return aliases, problems
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(Rejection(path.name, number, "(line)", "not UTF-8 text"))
                continue
            entries = [e for e in (_normalise(part) for part in line.split(",")) if e]
            if len(entries) < 2:
                continue  # blank line or a group of one: nothing to map
            canonical = entries[0]
            for synonym in entries[1:]:
                if synonym == canonical:
                    continue
                known = aliases.get(synonym)
                if known is None:
                    aliases[synonym] = canonical
                    first_line[synonym] = number
                elif known != canonical:
                    problems.append(Rejection(
                        path.name, number, synonym,
                        f"already an alias of '{known}' (line {first_line[synonym]}); kept that"))
    return _follow_chains(aliases, first_line, path.name, problems), problems


def _follow_chains(aliases: dict[str, str], first_line: dict[str, int], name: str,
                   problems: list[Rejection]) -> dict[str, str]:
    """Map each synonym to the end of its chain (a -> b, b -> c gives a -> c); a cycle stops early."""
    resolved: dict[str, str] = {}
    for synonym in aliases:
        path = [synonym]
        target = aliases[synonym]
        while target in aliases and target not in path:
            path.append(target)
            target = aliases[target]
        if target in path:  # a cycle: keep the last name before it repeats
            problems.append(Rejection(name, first_line[synonym], synonym,
                                      "alias cycle: " + " -> ".join([*path, target])))
            target = path[-1] if path[-1] != synonym else aliases[synonym]
        resolved[synonym] = target
    return resolved
