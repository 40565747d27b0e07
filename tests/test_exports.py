"""The public surface of each package is declared, complete and sorted (as httpx checks)."""

from __future__ import annotations

import prism.raft


def test_raft_exports_are_sorted_and_resolve() -> None:
    assert prism.raft.__all__ == sorted(prism.raft.__all__)
    for name in prism.raft.__all__:
        assert getattr(prism.raft, name) is not None


def test_cores_do_not_import_io_or_the_codec() -> None:
    """The Raft core is sans-IO: it must not pull in trio, msgpack, sockets or the clock."""
    import ast
    import pathlib

    banned = {"trio", "msgpack", "socket", "time", "os", "threading", "logging", "psutil"}
    # The trio driver of the core, its transports and the node entry point are the I/O
    # layer (DESIGN.md, layer 2): exactly these files, not the cores, may do I/O.
    io_layer = {"driver.py", "driver_requests.py", "transport.py", "serve.py"}
    core_dir = pathlib.Path(prism.raft.__file__).parent
    assert io_layer <= {path.name for path in core_dir.glob("*.py")}, "rename io_layer too"
    for path in sorted(core_dir.glob("*.py")):
        if path.name in io_layer:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            assert not names & banned, f"{path.name} imports {sorted(names & banned)}"
            assert "prism.wire" not in {getattr(node, "module", None)}, path.name
