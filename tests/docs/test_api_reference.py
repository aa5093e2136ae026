"""The API reference renders: every docstring it shows parses as Google style, documents each parameter of its
signature exactly once, and no Sphinx role is left anywhere in the package's source.

griffe (mkdocstrings' parser) reads the docstrings the way the site does, with mkdocs.yml's options.
"""

from __future__ import annotations

import logging
import re

import pytest
import yaml

from tests.helpers import ROOT

griffe = pytest.importorskip("griffe")

SRC = ROOT / "src"
API_PAGE = ROOT / "docs" / "api.md"
SPHINX_ROLE = re.compile(r":(class|func|data|meth|mod|attr|obj|exc|ref):`")
# a section title the parser missed (no blank line before it) is left as text
# "Returns:" whose first line is "TYPE: text" (dict[str, int], Path | None)
TYPE_THEN_COLON = re.compile(r"^[\w.]+(\[[^\]]*\])?( \| [\w.]+(\[[^\]]*\])?)*: ")
MISSED_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Attributes):\s*$", re.MULTILINE)


def handler_options() -> dict:
    """The docstring options mkdocs.yml gives the python handler."""
    text = (ROOT / "mkdocs.yml").read_text()
    config = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader: the file may hold tags for other plugins
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            return plugin["mkdocstrings"]["handlers"]["python"]["options"]
    raise AssertionError("mkdocs.yml has no mkdocstrings plugin")


def documented_identifiers() -> list[tuple[str, object]]:
    """(identifier, its members option) of every `::: identifier` block of the API page."""
    found = []
    lines = API_PAGE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("::: "):
            block = []
            for follow in lines[i + 1:]:
                if not follow.startswith("    "):
                    break
                block.append(follow[4:])
            options = (yaml.safe_load("\n".join(block)) or {}).get("options", {}) if block else {}
            found.append((line[4:].strip(), options.get("members", True)))
    return found


@pytest.fixture(scope="module")
def package():
    return griffe.load("aticnet", search_paths=[str(SRC)], resolve_aliases=True)


@pytest.fixture(scope="module")
def parse_options() -> dict:
    options = handler_options()
    assert options["docstring_style"] == "google"
    parsed = {k: v == "true" if v in ("true", "false") else v for k, v in options["docstring_options"].items()}
    return parsed


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def rendered_objects(package) -> list[tuple[object, bool]]:
    """(object, whether its members are shown) for each `:::` target of the API page, and the public members of
    the classes shown with theirs."""
    objects = []
    for identifier, members in documented_identifiers():
        obj = package[identifier.removeprefix("aticnet.")]
        obj = obj.final_target if obj.is_alias else obj
        objects.append((obj, members is not False))
        if obj.is_class and members is not False:
            for name, member in obj.members.items():
                wanted = members is True or name in members
                if wanted and not name.startswith("_") and not member.is_alias and member.docstring:
                    objects.append((member, True))
    return objects


def returns_first_line(docstring: str) -> str | None:
    """The first line of a docstring's Returns section, or None."""
    lines = docstring.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Returns:":
            return next((follow.strip() for follow in lines[i + 1:] if follow.strip()), None)
    return None


def signature_names(obj) -> list[str]:
    """The parameters a caller passes: the function's, or the class's __init__ (merged into the class)."""
    function = obj.members.get("__init__") if obj.is_class else obj
    if function is None or not function.is_function:
        return []
    return [p.name for p in function.parameters if p.name not in ("self", "cls")]


def test_the_api_page_names_the_public_api_under_its_qualified_names():
    identifiers = [identifier for identifier, _ in documented_identifiers()]
    for name in ("load", "from_pretrained", "build_model", "train", "evaluate", "quantize", "export",
                 "list_weights", "Segmenter", "TrainConfig", "load_config", "colorize", "overlay"):
        assert f"aticnet.{name}" in identifiers, f"aticnet.{name} is not on the API page under that name"
    assert len(identifiers) == len(set(identifiers)), "an object is documented twice"


def test_every_rendered_docstring_parses_and_documents_each_parameter_once(package, parse_options):
    catcher = Warnings()
    griffe_logger = logging.getLogger("griffe")
    griffe_logger.addHandler(catcher)
    problems = []
    try:
        for obj, members_shown in rendered_objects(package):
            where = f"{obj.path} ({obj.relative_filepath}:{obj.lineno})"
            if obj.docstring is None:
                problems.append(f"{where}: no docstring")
                continue
            catcher.messages.clear()
            sections = obj.docstring.parse("google", **parse_options)
            problems += [f"{where}: {m}" for m in catcher.messages]
            documented = [p.name.lstrip("*") for s in sections if s.kind.value == "parameters" for p in s.value]
            for s in sections:
                if s.kind.value == "text" and MISSED_SECTION.search(s.value):
                    problems.append(f"{where}: a section title is read as text (a blank line must precede it)")
            if obj.is_class and "dataclass" in obj.labels:
                # a dataclass's fields: an Attributes section, unless the page shows them otherwise (TrainConfig's
                # generated table, ModelConfig's on Models)
                attributes = [a.name for s in sections if s.kind.value == "attributes" for a in s.value]
                fields = [m.name for m in obj.members.values()
                          if m.is_attribute and m.annotation is not None and "property" not in m.labels]
                missing = [f for f in fields if f not in attributes]
                if members_shown and missing:
                    problems.append(f"{where}: fields not in its Attributes section: {', '.join(missing)}")
            elif obj.is_function or obj.is_class:
                wanted = [n.lstrip("*") for n in signature_names(obj)]
                missing = [n for n in wanted if n not in documented]
                unknown = [n for n in documented if n not in wanted]
                twice = sorted({n for n in documented if documented.count(n) > 1})
                if missing:
                    problems.append(f"{where}: parameters not documented: {', '.join(missing)}")
                if unknown:
                    problems.append(f"{where}: documented but not parameters: {', '.join(unknown)}")
                if twice:
                    problems.append(f"{where}: documented twice: {', '.join(twice)}")
            first = returns_first_line(obj.docstring.value)
            if first and ":" in first and not re.match(TYPE_THEN_COLON, first):
                problems.append(f"{where}: the first line of Returns has a colon, so the text before it would be "
                                f"read as a type: {first!r}")
            returns = obj.is_function and obj.returns is not None and str(obj.returns) not in ("None", "")
            documented_returns = any(s.kind.value == "returns" for s in sections)
            if returns and not obj.name.startswith("__") and "property" not in obj.labels and not documented_returns:
                problems.append(f"{where}: returns {obj.returns} but has no Returns section")
    finally:
        griffe_logger.removeHandler(catcher)
    assert not problems, "\n".join(problems)


def test_no_sphinx_role_in_the_source():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((SRC / "aticnet").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if SPHINX_ROLE.search(line)]
    assert not found, "Sphinx roles render as raw text on the site; use [`Name`][aticnet.Name] or backticks:\n" + \
        "\n".join(found)
