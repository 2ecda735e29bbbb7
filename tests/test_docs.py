"""The README and docs/: links resolve, the README stays short and runs what CI runs, papers are
cited by title, and the demo's numbers are those of the file a run writes."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
CLAIMS = ROOT / "benchmarks" / "demo" / "claims.md"

# [text](target) outside code; images too. Targets with a scheme (https:, mailto:) are external.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", path.read_text()), re.M)
    return {slug(h) for h in headings}


def relative_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text()))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert relative_links(path) or path.name == "testing.md", f"{path} links nowhere"
    assert broken_links(path) == []


def test_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Dose-response and interventions\n")
    page.write_text(
        "# Page\n[ok](other.md#dose-response-and-interventions) [gone](missing.md)\n"
        "[typo](other.md#doseresponse) [self](#page) `[not a link](nowhere.md)`\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "other.md#doseresponse"]


def test_slug_drops_punctuation_like_github():
    assert slug("Why the demo selects 15% of the neurons, not the paper's 1%") == (
        "why-the-demo-selects-15-of-the-neurons-not-the-papers-1"
    )
    assert (
        slug("The layer-matched control (`rnd_matched`)") == "the-layer-matched-control-rnd_matched"
    )
    assert slug("Dose–response") == "doseresponse"  # an en dash is dropped, not a hyphen


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_docs_page_is_listed_in_the_index_and_the_readme():
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    index = {Path(t.partition("#")[0]).name for t in relative_links(DOCS / "index.md")}
    readme = {Path(t.partition("#")[0]).name for t in relative_links(README)}
    assert pages - index == set(), "docs pages missing from docs/index.md"
    assert pages - readme == set(), "docs pages missing from the README's links"


def test_readme_quick_start_is_what_ci_runs():
    # .ci/run runs the README's setup and test commands on a clean clone: keep them one text.
    quick_start = re.search(r"## Quick start\n+```bash\n(.*?)```", README.read_text(), re.S)
    assert quick_start, "README.md has no ```bash block under '## Quick start'"
    commands = [
        line.strip()
        for line in quick_start.group(1).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    setup = 'python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[dev]"'
    assert commands == [setup, "snakemake --cores 2", "pytest"]
    assert setup in ci and "pytest" in ci


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_papers_are_cited_by_title_not_by_seed(path):
    text = path.read_text()
    assert not re.search(r"seed\s*00\d", text, re.I), f"{path.name} names a paper by a seed"


def test_readme_and_index_cite_both_papers():
    for path in (README, DOCS / "index.md"):
        text = " ".join(path.read_text().split())
        assert "Finding Culture-Sensitive Neurons in Vision-Language Models" in text
        assert "Zhao, Choenni, Saxena" in text and "Titov" in text
        assert "Neuron-Level Analysis of Cultural Understanding in Large Language Models" in text
        assert "ynklab/CULNIG" in text


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_use_the_current_rule_names(path):
    old = re.findall(r"\b(baseline_and_record|make_demo_data|train_demo_model)\b", path.read_text())
    assert old == [], f"{path.name} uses renamed rules {sorted(set(old))}"


def claims_table2() -> dict[tuple[str, str], list[str]]:
    """Table 2 of benchmarks/demo/claims.md: (metric, setting) -> the selector cells."""
    rows, metric = {}, None
    for line in CLAIMS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 11 or cells[2] in ("Eval. Setting", "---"):
            continue
        metric = cells[1] or metric
        rows[(metric, cells[2])] = cells[3:]
    return rows


def page_table(path: Path, first_header: str) -> list[list[str]]:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip().strip("|").split("|")])
    return body


def test_readme_demo_numbers_are_those_of_claims_md():
    claims = claims_table2()
    settings = {
        "own culture (self)": "Self-Deactivation",
        "other cultures (cross)": "Cross-Deactivation Avg.",
        "gap": "Self-Cross Gap",
    }
    rows = page_table(README, "| RND |")
    assert [r[0] for r in rows] == list(settings)
    for row in rows:
        assert row[1:] == claims[("Acc. Δ", settings[row[0]])], row[0]


def test_demo_page_table2_is_that_of_claims_md():
    claims = claims_table2()
    rows, metric = page_table(DOCS / "demo.md", "Metric | Eval. Setting"), None
    assert len(rows) == len(claims) == 8
    for row in rows:
        metric = row[0] or metric
        assert row[2:] == claims[(metric, row[1])], (metric, row[1])


def test_demo_page_dose_response_rows_are_those_of_claims_md():
    # The page prints a true minus sign; claims.md a hyphen. Same row otherwise.
    claims = CLAIMS.read_text()
    rows = page_table(DOCS / "demo.md", "r | CAS self Δ")
    assert [r[0] for r in rows] == ["0.05", "0.10", "0.15", "0.20"]
    for row in rows:
        assert ("| " + " | ".join(row) + " |").replace("−", "-") in claims, row[0]
