"""Conventions of the repository itself: how the tests are organised, what the sources cite."""

import ast
import glob
import os
import re

from support import REPO


def python_files(*folders):
    return [
        p
        for folder in folders
        for p in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True)
    ]


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_no_test_module_imports_another_test_module_or_conftest():
    offending = [
        (os.path.relpath(path, REPO), module)
        for path in python_files("tests")
        for module in imported_modules(path)
        if module.split(".")[0].startswith("test_") or module.split(".")[0] == "conftest"
    ]
    assert offending == [], "shared test helpers belong in tests/support/"


def test_code_and_docs_cite_the_paper_or_the_docs_never_internal_documents():
    # The project's internal notes are not shipped: sources cite the paper (section, equation,
    # table) or a page under docs/.
    internal = re.compile(r"[S]PEC\b|[Ii]ssue \d")  # [S]: this line does not match itself
    files = python_files("ltm_d2", "dev", "tools", "tests", "bench", "demo") + [
        os.path.join(REPO, "train_net.py"),
        os.path.join(REPO, "setup.py"),
    ]
    files += glob.glob(os.path.join(REPO, "*.md")) + glob.glob(os.path.join(REPO, "docs", "*.md"))
    files += glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    offending = [
        f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(open(path, encoding="utf-8"), 1)
        if internal.search(line)
    ]
    assert offending == []


def test_the_docs_name_no_folder_of_the_machines_they_were_written_on():
    pages = glob.glob(os.path.join(REPO, "*.md")) + glob.glob(os.path.join(REPO, "docs", "*.md"))
    offending = [
        f"{os.path.relpath(path, REPO)}:{number}"
        for path in pages
        for number, line in enumerate(open(path, encoding="utf-8"), 1)
        if re.search(r"(?<![\w.])/(work|root|home)/", line)
    ]
    assert offending == []


def test_the_usage_of_every_command_line_prints_its_continued_lines_as_written():
    # A usage docstring is the --help text: a command continued with "\" must print on two lines,
    # as it is to be pasted, not joined by Python's backslash-newline escape.
    joined = []
    for path in python_files("tools", "demo", "bench") + [os.path.join(REPO, "train_net.py")]:
        source = open(path, encoding="utf-8").read()
        tree = ast.parse(source, path)
        docstring = ast.get_docstring(tree, clean=False)
        if docstring is not None and "\\\n" in ast.get_source_segment(source, tree.body[0]):
            if "\\\n" not in docstring:
                joined.append(os.path.relpath(path, REPO))
    assert joined == []


def test_docs_layout_lists_every_module_and_only_modules_that_exist():
    # docs/layout.md is where a reader looks for a module: each one of these folders is named
    # there by its path (a package's __init__.py by its folder's modules), and no path of a module
    # that moved or went away stays behind.
    layout = open(os.path.join(REPO, "docs", "layout.md"), encoding="utf-8").read()
    listed = set(re.findall(r"[\w/]+\.py\b", layout))
    on_disk = {
        os.path.relpath(path, REPO)
        for path in python_files("ltm_d2", "dev", "tools", "bench", "demo")
        if os.path.basename(path) != "__init__.py"
        # configs/ as setup.py links or copies it into the package: LazyConfigs, not modules
        and not os.path.relpath(path, REPO).startswith("ltm_d2/model_zoo/configs/")
    }
    assert sorted(on_disk - listed) == [], "modules missing from docs/layout.md"
    gone = [path for path in listed if not os.path.isfile(os.path.join(REPO, path))]
    assert sorted(gone) == [], "docs/layout.md names modules that do not exist"
