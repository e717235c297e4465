"""The documentation holds together: the README stays short, every link lands on a file of the
repository, and every reference to the design names a section that docs/design.md has."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [p for d in ("impls", "rnnbench", "benchmarks", "scripts", "tests", "examples")
           for p in sorted((ROOT / d).rglob("*"))
           if p.suffix in (".py", ".sh", ".md", ".toml") and p.name != "test_docs.py"]
README_MAX_BYTES = 12 * 1024


def headings(page: Path) -> list[str]:
    return [h.strip().lower() for h in re.findall(r"(?m)^#+ (.+)$", page.read_text())]


def test_the_readme_is_read_in_two_minutes():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to a page under docs/"


def test_every_relative_link_of_the_pages_lands_on_a_file():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+://", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_every_reference_to_the_design_names_a_section_it_has():
    """References read ``docs/design.md "Section"``; the quoted name is the start of a heading there.
    A bare ``DESIGN.md`` (the team's card, outside the repository) is no reference a reader can follow."""
    sections = headings(ROOT / "docs" / "design.md")
    bad = []
    for path in SOURCES + PAGES:
        text = path.read_text(errors="replace")
        name = path.relative_to(ROOT)
        for m in re.finditer(r"(?<![/\w])DESIGN\.md", text):
            bad.append(f"{name}: bare DESIGN.md near {text[m.start():m.start() + 60]!r}")
        for section in re.findall(r"docs/design\.md,? [\"“']([^\"”']+)[\"”']", text):
            if not any(h.startswith(" ".join(section.split()).lower()) for h in sections):
                bad.append(f"{name}: docs/design.md has no section {section!r}")
    assert not bad, "\n".join(bad)
