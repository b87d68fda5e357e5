"""The shape of the code: files of a readable size, no import circles, an analysis and statistics of ζ
without torch, no change of the import path outside the tests, only the entry points at the top,
and random streams that cannot be confused."""
import ast
import re
import subprocess
import sys
from pathlib import Path

from runner import streams
import susceptibility
from conftest import ROOT

LONGEST = 450  # lines; a longer file says why in its opening docstring ("long because ...")


def project_files(pattern: str = "*.py") -> list[Path]:
    """The project's Python files (or others of `pattern`), tests, virtual environments and run
    outputs aside."""
    skipped = {"tests", ".venv", "build", "results", ".ipynb_checkpoints"}
    return sorted(path for path in ROOT.rglob(pattern)
                  if not skipped & set(path.relative_to(ROOT).parts) and not path.name.startswith("."))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, wherever in the file (also under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_file_is_longer_than_the_limit_without_saying_why():
    too_long = [f"{path.relative_to(ROOT)} ({length} lines)" for path in project_files()
                if (length := len(path.read_text().splitlines())) > LONGEST
                and "long because" not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert too_long == []


def test_modules_import_each_other_without_a_circle():
    files = {module_name(path): path for path in project_files() if "tools" not in path.parts}
    graph = {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}
    assert "runner.batching" in graph["runner.run"] and "datasets" in graph["runner.batching"]  # read right

    def circle_from(start: str, node: str, trail: list[str]) -> list[str] | None:
        for following in sorted(graph[node]):
            if following == start:
                return trail + [start]
            if following not in trail and following in graph:
                found = circle_from(start, following, trail + [following])
                if found:
                    return found
        return None

    circles = [circle for name in graph if (circle := circle_from(name, name, [name]))]
    assert circles == []


def torch_loaded_by(modules: list[str]) -> bool:
    """Whether importing `modules` in a fresh interpreter loads torch."""
    check = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.strip() == "True"


def test_the_analysis_imports_no_torch():
    modules = [module_name(path) for path in project_files()
               if path.parts[-2] == "analysis" and path.name != "__main__.py"]
    assert "analysis.figures" in modules and "analysis.cli" in modules
    assert not torch_loaded_by(modules)


def test_the_statistics_of_zeta_import_no_torch_and_the_probe_does():
    assert not torch_loaded_by(["susceptibility.zeta"]) and torch_loaded_by(["susceptibility.probe"])


# A change of the import path at run time: sys.path.insert/append/extend, an assignment to sys.path
# or to a slice of it, or site.addsitedir.
SYS_PATH_CHANGE = re.compile(r"\bsys\.path\s*(\.\s*(insert|append|extend)\s*\(|(\[[^\]]*\])?\s*\+?=(?!=))"
                             r"|\bsite\.addsitedir\s*\(")


def test_the_pattern_finds_every_way_of_changing_sys_path():
    changes = ["sys.path.insert(0, str(ROOT))", "sys.path.append(x)", "sys.path.extend(paths)", "sys.path = []",
               "sys.path += [x]", "sys.path[:0] = [x]", "site.addsitedir(folder)"]
    readings = ["print(sys.path)", "if sys.path == []:", "x = sys.path[0]", "sys.pathname = 1"]
    assert all(SYS_PATH_CHANGE.search(code) for code in changes)
    assert not any(SYS_PATH_CHANGE.search(code) for code in readings)


def test_no_file_outside_the_tests_changes_the_import_path():
    """Tools run as modules from the repository root and the example imports the installed package,
    so nothing needs sys.path changed; the tests alone may (pytest.ini adds the root)."""
    files = [*project_files(), *project_files("*.ipynb")]
    assert ROOT / "examples" / "own_training_loop.py" in files and ROOT / "results.ipynb" in files
    assert [str(path.relative_to(ROOT)) for path in files if SYS_PATH_CHANGE.search(path.read_text())] == []


def test_the_top_level_holds_only_the_entry_points_as_modules():
    assert sorted(path.name for path in ROOT.glob("*.py")) == ["datasets.py", "experiments.py", "sweep.py"]


def test_every_random_stream_has_its_own_name():
    names = [stream.value for stream in streams.Stream] + [stream.value for stream in susceptibility.ProbeStream]
    assert len(names) == len(set(names)) > 8


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as -."""
    headings = re.findall(r"(?m)^#+ (.+)$", markdown)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_the_documents_lead_to_files_and_headings_that_exist():
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists() or (anchor and linked.suffix == ".md"
                                       and anchor not in heading_anchors(linked.read_text())):
                broken.append(f"{document.relative_to(ROOT)}: {target}")
    assert len(documents) > 8 and broken == []
