"""The documentation's code is tested code, and its reference is complete.

Code reaches ``docs/`` only through ``literalinclude`` of files under ``examples/``, which
the test suite runs; the only other blocks allowed are console sessions and plain text
(the engine's diagram). Every public name is in the generated reference. The build
itself (``sphinx-build -W``) runs in ``nox -s docs``.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
REFERENCE = DOCS / "reference"
PUBLIC_MODULES = ("plait", "plait.testing", "plait.channels", "plait.types", "plait.otel")

# Languages of blocks that may be written in the page itself.
ALLOWED_LANGUAGES = frozenset({"console", "sh", "text"})
# Directives that put code on a page; only ``code-block`` with an allowed language and
# ``literalinclude`` of an example may be used.
CODE_DIRECTIVES = frozenset(
    {
        "code",
        "code-block",
        "sourcecode",
        "highlight",
        "doctest",
        "testcode",
        "testsetup",
        "testcleanup",
        "testoutput",
        "ipython",
        "jupyter-execute",
        "exec",
        "include",
        "literalinclude",
    }
)
# A text or console block holds no Python: that belongs in an example.
PYTHON_LINE = re.compile(
    r"^\s*(?:>>>|def |async def |class \w|import \w|from [\w.]+ import |await |"
    r"async (?:for|with) |@\w)"
)

DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<name>[\w:-]+)::(?P<argument>.*)$")
OPTION = re.compile(r"^\s+:(?P<name>[\w-]+):\s*(?P<value>.*)$")
FENCE = re.compile(
    r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*\{?(?P<info>[^}\s]*)\}?\s*(?P<rest>.*)$"
)


@dataclass
class Directive:
    """One ``.. name:: argument`` with its options and body, as written in a page."""

    page: Path
    line: int
    name: str
    argument: str
    options: dict[str, str] = field(default_factory=dict)
    body: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """Every source page of the documentation (not the build output)."""
    found = [
        path
        for path in sorted(DOCS.rglob("*"))
        if path.suffix in (".rst", ".md") and "_build" not in path.relative_to(DOCS).parts
    ]
    assert found, "no pages under docs/"
    return found


def rst_directives(page: Path) -> list[Directive]:
    """The directives of a reStructuredText page, with options and indented body."""
    lines = page.read_text(encoding="utf-8").splitlines()
    directives = []
    index = 0
    while index < len(lines):
        match = DIRECTIVE.match(lines[index])
        index += 1
        if match is None:
            continue
        directive = Directive(
            page, index, match["name"], match["argument"].strip(), options={}, body=[]
        )
        indent = len(match["indent"])
        while index < len(lines) and (option := OPTION.match(lines[index])):
            directive.options[option["name"]] = option["value"].strip()
            index += 1
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
        ):
            directive.body.append(lines[index])
            index += 1
        directives.append(directive)
    return directives


def md_fences(page: Path) -> list[Directive]:
    """The fenced blocks of a Markdown page, as directives (MyST's ``{name}`` too)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        index += 1
        if match is None:
            continue
        fence = match["fence"]
        info = match["info"] or "none"
        block = Directive(page, index, info, match["rest"].strip())
        while index < len(lines) and not lines[index].strip().startswith(fence):
            option = re.match(r"^:(?P<name>[\w-]+):\s*(?P<value>.*)$", lines[index])
            if option and not block.body:
                block.options[option["name"]] = option["value"].strip()
            else:
                block.body.append(lines[index])
            index += 1
        index += 1
        if info in ("code-block", "code", "sourcecode"):
            block.options["language"] = block.argument
        blocks.append(block)
    return blocks


def blocks(page: Path) -> list[Directive]:
    return md_fences(page) if page.suffix == ".md" else rst_directives(page)


def code_blocks() -> list[Directive]:
    return [
        block
        for page in pages()
        for block in blocks(page)
        if block.name in CODE_DIRECTIVES or page.suffix == ".md"
    ]


def literalincludes() -> list[Directive]:
    return [block for block in code_blocks() if block.name == "literalinclude"]


def included_file(block: Directive) -> Path:
    """The file a literalinclude names: relative to its page, or to docs/ with a '/'."""
    argument = block.argument
    base = DOCS if argument.startswith("/") else block.page.parent
    return (base / argument.lstrip("/")).resolve()


def ids(items: list[Directive]) -> list[str]:
    return [item.where() for item in items]


# -- (a) no free-standing code ------------------------------------------------------------


@pytest.mark.parametrize("block", code_blocks(), ids=ids(code_blocks()))
def test_code_in_a_page_is_a_console_or_text_block(block: Directive) -> None:
    if block.name == "literalinclude":
        return  # checked below: it must come from examples/
    assert block.name in ("code-block", "code", "sourcecode") or block.page.suffix == ".md", (
        f"{block.where()}: '.. {block.name}::' puts code on the page; "
        "literalinclude a file under examples/ instead"
    )
    language = block.options.get("language") or block.argument or block.name
    assert language in ALLOWED_LANGUAGES, (
        f"{block.where()}: a {language!r} block; only {sorted(ALLOWED_LANGUAGES)} blocks may be "
        "written in a page, code comes from examples/ with literalinclude"
    )
    python = [line.strip() for line in block.body if PYTHON_LINE.match(line)]
    assert not python, f"{block.where()}: Python in a {language} block: {python}"
    if language == "console":
        commands = [line for line in block.body if line.strip().startswith("$ ")]
        assert commands, f"{block.where()}: a console block without a '$ ' command"
        inline = [line.strip() for line in commands if re.search(r"python3? -c |<<", line)]
        assert not inline, f"{block.where()}: code passed inline to a command: {inline}"


@pytest.mark.parametrize("page", pages(), ids=[str(p.relative_to(ROOT)) for p in pages()])
def test_no_literal_blocks(page: Path) -> None:
    """reStructuredText's ``::`` literal blocks would be code that no test runs."""
    if page.suffix != ".rst":
        return
    offenders = [
        f"{page.relative_to(ROOT)}:{number}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if line.rstrip().endswith("::") and not DIRECTIVE.match(line)
    ]
    assert not offenders, f"literal blocks ('::'): {offenders}; use a console block or an example"


def test_the_pages_have_code_blocks_to_check() -> None:
    """The parsing above finds something: a check of nothing cannot fail."""
    assert len(literalincludes()) >= 10
    assert any(block.options.get("language", block.argument) == "text" for block in code_blocks())


# -- (b) literalinclude: existing example files -----------------------------------------------


@pytest.mark.parametrize("block", literalincludes(), ids=ids(literalincludes()))
def test_literalinclude_points_at_an_existing_example(block: Directive) -> None:
    target = included_file(block)
    assert target.is_file(), f"{block.where()}: {block.argument} does not exist"
    assert target.is_relative_to(EXAMPLES), (
        f"{block.where()}: {block.argument} is not under examples/, which the test suite runs"
    )
    text = target.read_text(encoding="utf-8")
    for option in ("start-at", "start-after", "end-at", "end-before"):
        if option in block.options:
            assert block.options[option] in text, (
                f"{block.where()}: :{option}: {block.options[option]!r} is not in {block.argument}"
            )
    if "pyobject" in block.options:
        defined = {
            node.name
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        assert block.options["pyobject"].split(".")[-1] in defined, (
            f"{block.where()}: {block.argument} defines no {block.options['pyobject']!r}"
        )
    assert example_is_tested(target), f"{block.where()}: no test under tests/ runs {block.argument}"
    assert "lines" not in block.options, (
        f"{block.where()}: :lines: breaks silently when the example changes; "
        "use :pyobject: or :start-at:/:end-before:"
    )


def example_is_tested(target: Path) -> bool:
    """Whether a test module names the example (``examples.echo``, or ``"echo"`` in a
    module about the examples): the docs show only code the suite runs."""
    parts = target.relative_to(EXAMPLES).with_suffix("").parts
    if parts[-1].startswith("test_"):
        return True  # an example test module: pytest collects examples/ too
    name = parts[0]  # a package example (examples/chat/app.py) is run as examples.chat
    for test in (ROOT / "tests").rglob("*.py"):
        if test.resolve() == Path(__file__).resolve():
            continue
        text = test.read_text(encoding="utf-8")
        if f"examples.{name}" in text or ("examples" in text and f'"{name}"' in text):
            return True
    return False


# -- (c) the reference covers every public name -------------------------------------------------

AUTODOC = re.compile(r"auto(?:class|function|exception|data|decorator|attribute|method)")
PY_OBJECT = re.compile(r"py:(?:class|function|exception|data|decorator)")


def documented_names() -> set[str]:
    """Fully qualified names that the reference pages document."""
    names = set()
    for page in sorted(REFERENCE.glob("*.rst")):
        module = ""
        for directive in rst_directives(page):
            if directive.name in ("module", "py:module", "currentmodule", "py:currentmodule"):
                module = directive.argument
            elif AUTODOC.fullmatch(directive.name):
                names.add(directive.argument.split("(")[0].strip())
            elif PY_OBJECT.fullmatch(directive.name):
                name = directive.argument.split("(")[0].strip()
                names.add(f"{directive.options.get('module', module)}.{name}")
    return names


def public_names() -> list[str]:
    return [
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
    ]


@pytest.mark.parametrize("name", public_names())
def test_every_public_name_is_in_the_reference(name: str) -> None:
    assert name in documented_names(), (
        f"{name} is public (in __all__) but no reference page under docs/reference documents it"
    )


def test_the_reference_documents_nothing_that_is_not_public() -> None:
    """A name that left ``__all__`` leaves the reference too."""
    extra = documented_names() - set(public_names())
    assert not extra, f"documented but not in any __all__: {sorted(extra)}"
