"""Reading a config file's parsed document into values, and saying where each problem is.

``Reader`` pulls typed values out of the document and collects every problem
rather than stopping at the first, each named by its key and line, so
``empath --check`` shows an operator all that is wrong in one go.
"""

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_.-]+)\s*=')


def unknown(name: str, known: Iterable[str], what: str = "key") -> str:
    """The problem with a name that is not ``known``, naming the nearest if it looks like a typo."""
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f"unknown {what}; did you mean {near[0]}?" if near else f"unknown {what}"


def key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths (``limits.max_recipients``, ``listeners[1].mode``) to line numbers."""
    lines: dict[str, int] = {}
    table = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            name = m.group(2).replace('"', "")
            if m.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                name = f"{name}[{index}]"
            table = name
            lines.setdefault(table, number)
        elif m := _KEY.match(line):
            key = m.group(1).strip('"')
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


class Reader:
    """Pulls typed values out of the parsed document, noting every problem."""

    def __init__(self, text: str):
        self.lines = key_lines(text)
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        line = self.lines.get(key) or self.lines.get(key.rsplit(".", 1)[0])
        where = f"{key} (line {line})" if line else key
        self.problems.append(f"{where}: {message}")

    def table(self, doc: dict, name: str, known: set[str]) -> dict:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, "must be a table")
            return {}
        for key in value:
            if key not in known:
                self.problem(f"{name}.{key}", unknown(key, known))
        return value

    def get(self, table: dict, key: str, default: Any, convert: Callable[[Any], Any], where: str) -> Any:
        if key not in table:
            return default
        try:
            return convert(plain(table[key]))
        except (ValueError, TypeError) as exc:
            self.problem(where, str(exc))
            return default


def plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def tables(r: Reader, doc: dict, name: str, keys: tuple[str, ...], required: int) -> list[tuple[str, dict]]:
    """The ``[[name]]`` tables as (where, table), with unknown and missing keys reported.

    ``keys`` are the keys a table may have; the first ``required`` of them it must have.
    """
    raw = plain(doc.get(name, []))
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        r.problem(name, f"must be an array of tables: [[{name}]]")
        return []
    tables = []
    for i, entry in enumerate(raw):
        where = f"{name}[{i}]"
        for key in entry:
            if key not in keys:
                r.problem(f"{where}.{key}", unknown(key, keys))
        for key in keys[:required]:
            if key not in entry:
                r.problem(where, f"{key} is required")
        tables.append((where, entry))
    return tables


def located(path: Path, problems: list[tuple[str, str]]) -> list[str]:
    """Problems found after loading (a key and what is wrong), each as ``key (line N): what``."""
    try:
        r = Reader(path.read_text(encoding="utf-8") if problems else "")
    except (OSError, UnicodeDecodeError):
        r = Reader("")  # the problems without their lines
    for key, message in problems:
        r.problem(key, message)
    return r.problems
