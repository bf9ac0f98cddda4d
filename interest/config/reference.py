"""docs/configuration.md, generated from the comments beside the fields of the sections."""

from __future__ import annotations

import dataclasses

import yaml

from interest.config.load import GENERATOR
from interest.config.sections import Config, GeneratorConfig


def _field_notes(cls: type) -> dict[str, str]:
    """Field -> the comment beside it in its dataclass (the lines just above, and the trailing one)."""
    import ast
    import inspect

    source = inspect.getsource(cls).splitlines()
    notes: dict[str, str] = {}
    for node in ast.parse("\n".join(source)).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        row = node.lineno - 2
        while row >= 0 and source[row].strip().startswith("#"):
            above.insert(0, source[row].strip().lstrip("#").strip())
            row -= 1
        line = source[node.end_lineno - 1] if node.end_lineno else ""
        trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        notes[node.target.id] = " ".join(p for p in [*above, trailing] if p)
    return notes


def reference_rows(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, what it does) for every leaf key, in the order of the dataclasses."""
    cls = cls or Config
    notes, rows = _field_notes(cls), []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            rows += reference_rows(type(default), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", yaml.safe_dump(default, default_flow_style=True).strip(), notes[f.name]))
    return rows


def reference() -> str:
    """docs/configuration.md: every key with its default and what it does (``make docs`` writes it)."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `interest/config/sections.py` by `make docs`; a test checks that it is current.",
        "Set a key in a profile (`conf/*.yaml`) or with `--set section.key=value`; an unknown key, a",
        "wrong type or a value out of range stops the job naming the key. A mapping given with",
        "`--set` (`spark.conf={...}`) adds to the profile's. Paths derive from `paths.root` unless set.",
    ]
    rows = reference_rows()
    out += ["", f"{len(rows)} keys for a run; the sample generator's below them are read by `jobs/generate.py` only."]
    section = None
    for key, default, note in [*rows, *reference_rows(GeneratorConfig, f"{GENERATOR}.")]:
        if key.split(".")[0] != section:
            section = key.split(".")[0]
            title = f"`{section}` (sample data, jobs/generate.py)" if section == GENERATOR else f"`{section}`"
            out += ["", f"## {title}", "", "| key | default | what it does |", "| --- | --- | --- |"]
        cell = default.replace("...", "").replace("|", "\\|").strip()
        out.append(f"| `{key}` | `{cell}` | {note.replace('|', chr(92) + '|')} |")
    return "\n".join(out) + "\n"
