"""MkDocs hooks (mkdocs.yml `hooks:`): reference tables generated from the code when the site is built.

- `<!-- aticnet-cli-flags: NAME -->` in a page becomes the table of every argument of `aticnet NAME`, read from
  the argparse parser the command itself uses (`<!-- aticnet-cli-flags: -->`: the top-level options), so the
  command-line reference cannot drift from `--help`.
- `<!-- aticnet-train-config -->` becomes the table of every `TrainConfig` field: its type, default and help
  text, from the dataclass (its flag is its name with dashes: `crop_size` is `--crop-size`).

Running this file prints a page with every marker expanded: `python tools/mkdocs_hooks.py docs/cli.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from typing import Any

CLI_MARKER = re.compile(r"<!-- aticnet-cli-flags: *([a-z0-9_-]*) *-->")
TRAIN_CONFIG_MARKER = "<!-- aticnet-train-config -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs' hook: expand the markers of one page."""
    return expand(markdown)


def expand(markdown: str) -> str:
    """`markdown` with every marker replaced by its table; an unknown subcommand is an error naming it."""
    if CLI_MARKER.search(markdown):
        parsers = subcommand_parsers()
        markdown = CLI_MARKER.sub(lambda m: flags_table(parsers, m.group(1)), markdown)
    if TRAIN_CONFIG_MARKER in markdown:
        markdown = markdown.replace(TRAIN_CONFIG_MARKER, train_config_table())
    return markdown


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """`aticnet`'s parsers by subcommand name; "" is the top-level parser."""
    from aticnet.cli import build_parser

    top = build_parser()
    found: dict[str, argparse.ArgumentParser] = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def flags_table(parsers: dict[str, argparse.ArgumentParser], name: str) -> str:
    """A Markdown table of every argument of subcommand `name`: how to write it and its help text."""
    if name not in parsers:
        known = ", ".join(sorted(n for n in parsers if n))
        raise ValueError(f"aticnet-cli-flags: no subcommand {name!r} (subcommands: {known})")
    parser = parsers[name]
    formatter = parser._get_formatter()
    rows = ["| argument | meaning |", "| --- | --- |"]
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                   argparse._SubParsersAction)):
            continue
        written = formatter._format_action_invocation(action)
        meaning = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and action.metavar is not None:  # else the invocation shows them
            meaning += f" (one of {', '.join(str(c) for c in action.choices)})"
        if action.required and action.option_strings:
            meaning = "required; " + meaning
        rows.append(f"| {code(written)} | {cell(meaning)} |")
    return "\n".join(rows) + "\n"


def train_config_table() -> str:
    """A Markdown table of every TrainConfig field: YAML key, type, default and help."""
    from aticnet.training.config import TrainConfig, field_help

    helps = field_help()
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(TrainConfig):
        kind = str(f.type).replace("typing.", "")
        rows.append(f"| `{f.name}` | {code(kind)} | {code(default_text(f))} | {cell(helps[f.name])} |")
    return "\n".join(rows) + "\n"


def default_text(f: dataclasses.Field) -> str:
    """A field's default as YAML would write it (None: empty)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "empty"
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def code(text: str) -> str:
    """Inline code for a table cell (Python-Markdown's tables split no cell inside a code span)."""
    return "`" + text + "`"


def cell(text: str) -> str:
    """Plain text for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as page:
            print(expand(page.read()))
