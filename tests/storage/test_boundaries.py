"""Who may import the disk storage: the pure Raft core never does, and the disk storage
itself stays plain blocking code (no trio), so a driver can run it in a worker thread."""

from __future__ import annotations

import ast
from pathlib import Path

import prism.raft
import prism.raft.disk


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_raft_core_modules_do_not_import_the_disk_storage() -> None:
    """The trio driver and the node entry point beside the core (the I/O layer, known by
    their trio import, which ``tests/test_exports.py`` keeps out of the cores) may use it."""
    core_dir = Path(prism.raft.__file__).parent
    for path in sorted(core_dir.glob("*.py")):
        modules = imported_modules(path)
        if "trio" in modules:
            continue
        disk = {name for name in modules if name.startswith("prism.raft.disk")}
        assert not disk, f"{path.name} imports {sorted(disk)}"


def test_disk_storage_does_not_import_trio() -> None:
    disk_dir = Path(prism.raft.disk.__file__).parent
    for path in sorted(disk_dir.glob("*.py")):
        trio = {name for name in imported_modules(path) if name.split(".")[0] == "trio"}
        assert not trio, f"{path.name} imports {sorted(trio)}"


def test_disk_package_exports() -> None:
    assert prism.raft.disk.__all__ == sorted(prism.raft.disk.__all__) == ["DiskStorage"]
