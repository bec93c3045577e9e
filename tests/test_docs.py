"""The manual against the code: the space-file reference, PBT's mutable keys and schedule format, the subcommands it
names, the README's links and size, and the strict MkDocs build (a broken link or anchor fails it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raytrain.cli import COMMANDS
from raytrain.config import ConfigError
from raytrain.tuning import space as space_module


def space_contract(name: str) -> tuple[str, ...]:
    """A name of the space-file contract: defined in the space module, or in the module it takes it from."""
    if hasattr(space_module, name):
        return getattr(space_module, name)
    from raytrain.tuning import params  # the parameter types live beside Param

    return getattr(params, name)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TUNING = DOCS / "tuning.md"
TEST_COMMAND = "python -m pip install -e '.[dev]' && python -m pytest"
README_LIMIT = 12_000

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
# (text)(target) links, but not images' alt text (the target is checked all the same).
LINK = re.compile(r"\]\(([^)\s]+)\)")
# `raytrain SUB` where a command starts: a line, or after a shell prompt, `&&`, `--`, `;`, `|` or `(`; not prose such
# as "is not a valid raytrain argument" inside a quoted error message.
COMMAND_USE = re.compile(r"(?:^|&&|--|[;|($])[ \t]*raytrain ([a-z][\w-]*)", re.M)


def manual_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def code_text(markdown: str) -> str:
    """Everything inside fenced blocks and inline code spans: where a page names commands."""
    blocks = FENCE.findall(markdown)
    prose = FENCE.sub("", markdown)
    return "\n".join([*blocks, *INLINE.findall(prose)])


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` (a line such as '## Space-file reference') up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(heading + "\n") + len(heading) + 1
    end = re.compile(rf"^{level} ", re.M).search(markdown, start)
    return markdown[start:end.start() if end else len(markdown)]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cell texts."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def documented_keys(subsection: str) -> list[str]:
    """Every backticked name in the first column of the reference's ``### subsection`` table, in order."""
    text = section(section(TUNING.read_text(), "## Space-file reference"), f"### {subsection}")
    rows = table_rows(text)
    assert rows, f"docs/tuning.md: '### {subsection}' has no table"
    return [key for row in rows for key in INLINE.findall(row[0])]


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub give a heading made of words, spaces and punctuation."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


# ------------------------------------------------------------------------------------ the space-file reference
@pytest.mark.parametrize(("subsection", "accepted"), [
    ("Sections", space_contract("SECTIONS")),
    ("Resources", space_contract("RESOURCE_KEYS")),
    ("Settings", space_contract("SETTINGS")),
    ("Parameter types", space_contract("PARAM_TYPES")),
])
def test_reference_lists_exactly_what_the_space_reader_accepts(subsection, accepted):
    documented = documented_keys(subsection)
    missing = sorted(set(accepted) - set(documented))
    unknown = sorted(set(documented) - set(accepted))
    assert not missing, f"docs/tuning.md '### {subsection}' lacks {missing}, which space files accept"
    assert not unknown, f"docs/tuning.md '### {subsection}' documents {unknown}, which space files reject"
    assert len(documented) == len(set(documented)), f"'### {subsection}' lists a key twice: {documented}"


def test_reader_rejects_a_key_the_reference_does_not_list():
    # The other direction of the check above only means something if unknown keys really fail.
    with pytest.raises(ConfigError, match="num_sample"):
        space_module.load_space({"space": {"mosaic": [0.0, 1.0]}, "num_sample": 4})


def test_parameter_type_examples_load_as_that_type():
    rows = table_rows(section(section(TUNING.read_text(), "## Space-file reference"), "### Parameter types"))
    for row in rows:
        kind = INLINE.findall(row[0])[0]
        example = yaml.safe_load(INLINE.findall(row[-1])[-1])
        (name, _), = example.items()
        spec = space_module.load_space({"train": {"optimizer": "SGD"}, "space": example})
        assert spec.space[name].type == kind, f"the '{kind}' example in docs/tuning.md parses as another type"
        fields = set(re.findall(r"`(low|high|q|values)`", row[1]))
        given = set(example[name]) - {"type"} if isinstance(example[name], dict) else {"values"}
        assert fields == given, f"'{kind}': the fields column says {fields}, the example gives {given}"


def test_documented_setting_defaults_match_the_reader():
    """Where the Settings table gives literal defaults (`tpe`, 10, off), they are what a file without them gets."""
    spec = space_module.load_space({"space": {"mosaic": [0.0, 1.0]}})
    checked = 0
    for row in table_rows(section(section(TUNING.read_text(), "## Space-file reference"), "### Settings")):
        keys, defaults = INLINE.findall(row[0]), [d.strip() for d in row[1].split(",")]
        if len(keys) != len(defaults):
            continue
        for key, text in zip(keys, defaults, strict=True):
            if text == "off":
                expected = None
            elif re.fullmatch(r"`[^`]*`|-?\d+(\.\d+)?", text):
                expected = yaml.safe_load(text.strip("`"))
            else:
                continue  # prose ("what the cluster holds"): not a literal to compare
            assert getattr(spec, key) == expected, f"docs/tuning.md says {key} defaults to {text}"
            checked += 1
    assert checked >= 10, f"only {checked} literal defaults found in the Settings table"


def test_example_space_file_in_the_tuning_page_is_valid():
    blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```", TUNING.read_text(), re.S | re.M) if "space:" in b]
    assert blocks, "docs/tuning.md shows no example space file"
    for block in blocks:
        spec = space_module.load_space(yaml.safe_load(block))
        assert spec.space


def test_pbt_section_lists_exactly_the_keys_pbt_can_mutate():
    from raytrain.engine.hyper import MUTABLE

    text = section(TUNING.read_text(), "## Population-based training")
    item = text[text.index("**What can mutate**"):text.index("Any other searched key")]
    documented = [name for name in INLINE.findall(item) if name != "space:"]
    assert sorted(documented) == sorted(MUTABLE), f"docs/tuning.md lists {documented}; PBT can mutate {MUTABLE}"


def test_schedule_example_reads_as_a_schedule_file(tmp_path):
    from raytrain.engine.hyper import read_schedule

    text = section(TUNING.read_text(), "## Population-based training")
    block, = [b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M) if b.startswith("epochs:")]
    path = tmp_path / "schedule.yaml"
    path.write_text(block)
    schedule = read_schedule(path)
    assert list(schedule) == sorted(schedule) and schedule


def test_pbt_example_space_loads():
    spec = space_module.load_space(ROOT / "search_spaces" / "pbt.yaml")
    assert spec.scheduler == "pbt" and spec.num_samples == spec.population


def test_dry_run_sample_is_the_quickstart():
    """The dry-run output shown in docs/tuning.md says what the quickstart file holds (trials, TPE start, ranges)."""
    spec = space_module.load_space(ROOT / "search_spaces" / "quickstart.yaml")
    sample = section(TUNING.read_text(), "### Dry run")
    trials = re.search(r"^Trials: (\d+), Optuna TPE \(seed (\d+)\): the first (\d+) at random", sample, re.M)
    assert trials, "docs/tuning.md's dry-run sample has no 'Trials:' line"
    assert tuple(map(int, trials.groups())) == (spec.num_samples, spec.search_seed, spec.n_startup_trials)
    for name, kind, low, high in re.findall(r"^  (\w+): (\w+) in \[([\d.e-]+), ([\d.e-]+)\]", sample, re.M):
        param = spec.space[name]
        assert (param.type, param.low, param.high) == (kind, float(low), float(high)), f"dry-run sample: {name}"


def _listed_after(text: str, lead: str) -> list[str]:
    """The backticked names in the sentence of ``text`` that starts with ``lead`` (up to its full stop)."""
    start = " ".join(text.split()).index(lead)
    sentence = " ".join(text.split())[start:].split(". ", 1)[0]
    return INLINE.findall(sentence)


def test_resume_pages_list_exactly_what_a_resume_may_change():
    from raytrain.train.plan import RESUME_OVERRIDES
    from raytrain.tuning.resume import MAY_CHANGE

    fit = _listed_after((DOCS / "training.md").read_text(), "on resume only these may change:")
    assert fit == list(RESUME_OVERRIDES), f"docs/training.md lists {fit}; fit resume accepts {RESUME_OVERRIDES}"
    tune = _listed_after(TUNING.read_text(), "A resume may change these, and they apply:")
    assert sorted(tune) == sorted(MAY_CHANGE), f"docs/tuning.md lists {tune}; tune resume accepts {MAY_CHANGE}"


def test_readme_table_for_ultralytics_users_names_real_things():
    from raytrain.data.catalog import find_builtin

    rows = table_rows(section(README.read_text(), "## Coming from Ultralytics"))
    assert len(rows) >= 5, "README.md's 'Coming from Ultralytics' table is missing or short"
    names = [n for r in rows for n in re.findall(r"data=([\w.-]+\.yaml)", r[0])]
    assert names and all(find_builtin(n) for n in names), f"dataset names in the table that are not built in: {names}"
    commands = {c for r in rows for c in re.findall(r"raytrain (\w+)", r[1])}
    assert {"fit", "tune"} <= commands <= set(COMMANDS), commands


def test_no_reference_to_a_missing_test_file_or_readme_section():
    """Paths ``tests/...py`` named in the code, spaces, cluster file and docs exist; a README section named as
    ``README, "X"`` / ``README ("X")`` / ``README's "X"`` is a heading of the README."""
    headings = {m.strip() for m in re.findall(r"^#+ (.+)$", FENCE.sub("", README.read_text()), re.M)}
    files = [*ROOT.glob("raytrain/**/*.py"), *ROOT.glob("search_spaces/*.yaml"), ROOT / "cluster.yaml",
             *manual_pages(), ROOT / "DEVELOPERS.md"]
    for path in files:
        text = path.read_text()
        for name in re.findall(r"\btests/[\w/]+\.py\b", text):
            assert (ROOT / name).is_file(), f"{path.relative_to(ROOT)} names {name}, which does not exist"
        for section_name in re.findall(r"README(?:'s)?,? \(?[\"“]([^\"”]+)[\"”]", text):
            assert section_name in headings, f"{path.relative_to(ROOT)} points at the README's '{section_name}'"


# ------------------------------------------------------------------------------------------- commands, README
def test_every_subcommand_named_in_readme_and_docs_exists():
    named = {}
    for page in manual_pages():
        for name in COMMAND_USE.findall(code_text(page.read_text())):
            named.setdefault(name, page.name)
    unknown = {name: page for name, page in named.items() if name not in COMMANDS}
    assert not unknown, f"pages name subcommands that raytrain.cli.COMMANDS lacks: {unknown}"
    assert {"fit", "tune", "results"} <= set(named), "the manual should show fit, tune and results"


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text) < README_LIMIT, f"README.md has {len(text)} characters; move material into docs/"
    assert "pip install -e . && raytrain tune search_spaces/quickstart.yaml" in text
    assert TEST_COMMAND in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test command verbatim"


def test_readme_links_point_at_existing_files_and_headings():
    for target in LINK.findall(README.read_text()):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        path = ROOT / file
        assert path.exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README.md links to {target}: no such heading in {file}"


def test_images_stay_small():
    images = list((DOCS / "images").glob("*"))
    assert images, "docs/images holds the README's plot"
    for image in images:
        assert image.stat().st_size < 200_000, f"{image} is {image.stat().st_size} bytes; keep images < 200 KB"


def test_results_page_names_the_plots_results_draws():
    plots = pytest.importorskip("raytrain.tuning.plots", reason="raytrain.tuning.plots (Optuna's analysis) is absent")
    drawn = {value for name, value in vars(plots).items() if name.endswith("_PLOT")}
    tree = re.search(r"^```text\n(.*?)^```", (DOCS / "results.md").read_text(), re.S | re.M).group(1)
    documented = set(re.findall(r"^  ([\w-]+\.png)", tree, re.M))
    assert drawn and documented == drawn, f"docs/results.md lists {sorted(documented)}; results draws {sorted(drawn)}"


# -------------------------------------------------------------------------------------------------- the build
def test_slug_matches_python_markdown():
    assert slug("ASHA's efficiency") == "ashas-efficiency"
    assert slug("Safe checkpoints and converting Ultralytics weights") == \
        "safe-checkpoints-and-converting-ultralytics-weights"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
def test_manual_builds_in_strict_mode(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "tuning" / "index.html").is_file()
