"""docs/cli.md names every subcommand of `aticnet --help` and, once built, every flag of each `aticnet SUB --help`;
and every `aticnet` command written in the docs and the README uses flags its subcommand has.

The flags are read from the help text the command prints, independently of the hook that writes the page's tables.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from aticnet.cli import main
from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import mkdocs_hooks

CLI_PAGE = ROOT / "docs" / "cli.md"
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def sections(text: str) -> dict[str, list[str]]:
    """An argparse help text's sections ("positional arguments", "options") and their lines."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[a-z][a-z ]+:$", line):
            current = line[:-1]
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return found


def subcommands(capsys) -> list[str]:
    lines = sections(help_text(capsys))["positional arguments"]
    return [m.group(1) for line in lines if (m := re.match(r"^    ([a-z][a-z0-9-]*)(\s|$)", line))]


def arguments(capsys, sub: str = "") -> tuple[set[str], set[str]]:
    """(flags, positional names) that `aticnet [SUB] --help` lists."""
    parts = sections(help_text(capsys, *([sub] if sub else [])))
    flags = {flag for line in parts.get("options", []) if re.match(r"^  -", line)
             for flag in FLAG.findall(re.split(r"\s{2,}", line.strip())[0])}
    positionals = {re.split(r"\s+", line.strip())[0] for line in parts.get("positional arguments", [])
                   if re.match(r"^  \S", line)}
    return flags - {"--help"}, positionals


def page_sections(markdown: str) -> dict[str, str]:
    """`## aticnet NAME` sections of the CLI page, by NAME ("" for the text before the first)."""
    parts = re.split(r"^## aticnet ([a-z0-9-]+)\s*$", markdown, flags=re.MULTILINE)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


def test_aticnet_help_lists_the_subcommands_we_expect(capsys):
    found = subcommands(capsys)
    assert {"train", "predict", "evaluate", "export", "quantize", "serve", "stream", "benchmark"} <= set(found)


def test_the_cli_page_names_every_subcommand_and_every_flag(capsys):
    source = CLI_PAGE.read_text()
    built = page_sections(mkdocs_hooks.expand(source))
    written = page_sections(source)
    missing = []
    for sub in subcommands(capsys):
        if sub not in written:
            missing.append(f"no '## aticnet {sub}' section")
            continue
        assert f"<!-- aticnet-cli-flags: {sub} -->" in written[sub], f"the {sub} section has no flags table"
        flags, positionals = arguments(capsys, sub)
        named = set(FLAG.findall(built[sub]))
        missing += [f"aticnet {sub} {flag}" for flag in sorted(flags - named)]
        missing += [f"aticnet {sub} {name}" for name in sorted(positionals) if f"`{name}" not in built[sub]]
    top_flags, _ = arguments(capsys)
    missing += [f"aticnet {flag}" for flag in sorted(top_flags - set(FLAG.findall(built[""])))]
    assert not missing, "docs/cli.md lacks:\n" + "\n".join(missing)
    assert set(written) - {""} <= set(subcommands(capsys)), "docs/cli.md has a section for no subcommand"


def test_the_generated_table_fails_on_an_unknown_subcommand():
    with pytest.raises(ValueError, match="no subcommand 'nosuch'"):
        mkdocs_hooks.expand("<!-- aticnet-cli-flags: nosuch -->")


def commands_in(markdown: str) -> list[str]:
    """Every `aticnet SUB ...` command of a page's bash blocks, continuation lines joined, comments dropped."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = re.sub(r"\s#.*$", "", line)
            for part in re.split(r"&&|;|\|", line):
                match = re.search(r"(?:^|\s)(?:\S*/)?(?:aticnet|-m aticnet)\s+([a-z][a-z0-9-]*)(.*)$", part)
                if match:
                    found.append(f"{match.group(1)}{match.group(2)}")
    return found


def test_every_command_in_the_docs_uses_flags_its_subcommand_has(capsys):
    known = set(subcommands(capsys))
    flags = {sub: arguments(capsys, sub)[0] | {"--help"} for sub in known}
    top_flags = arguments(capsys)[0]
    wrong = []
    checked = 0
    for page in PAGES:
        for command in commands_in(page.read_text()):
            sub, *words = command.split()
            if sub not in known:
                if sub not in ("COMMAND", "SUB", "NAME"):  # placeholders of the CLI page's own syntax
                    wrong.append(f"{page.relative_to(ROOT)}: aticnet {sub}: no such subcommand")
                continue
            checked += 1
            for word in words:
                flag = word.split("=")[0]
                if FLAG.fullmatch(flag) and flag not in flags[sub] | top_flags:
                    wrong.append(f"{page.relative_to(ROOT)}: aticnet {sub} has no {flag}")
    assert checked > 50, "the docs' commands were not found"
    assert not wrong, "\n".join(wrong)


def test_the_hook_reads_the_cli_page_as_written():
    assert Path(mkdocs_hooks.__file__).resolve() == (ROOT / "tools" / "mkdocs_hooks.py").resolve()


def test_the_train_config_table_lists_every_field_with_its_default_and_help():
    import dataclasses

    from aticnet.training.config import TrainConfig, field_help

    rows = {row.split("|")[1].strip().strip("`"): row for row in
            mkdocs_hooks.expand("<!-- aticnet-train-config -->").splitlines()[2:]}
    defaults = TrainConfig()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(rows) == names, "a field is missing or out of order"
    for name in names:
        # cells split at pipes outside code spans (a type such as `float | None` holds one)
        cells = [c.strip() for c in re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", rows[name].strip().strip("|"))]
        value = getattr(defaults, name)
        shown = "empty" if value is None else str(list(value) if isinstance(value, tuple) else value)
        assert cells[2].strip("`").replace('"', "").replace("true", "True").replace("false", "False") == shown, name
        assert cells[3] == " ".join(field_help()[name].split()).replace("|", "\\|")
