"""The SWIM core is sans-IO and its public surface is declared (as tests/test_exports.py
checks for prism.raft)."""

from __future__ import annotations

import ast
import pathlib

import prism.swim

BANNED = {"trio", "msgpack", "socket", "time", "os", "threading", "logging", "psutil", "datetime"}
# Module-level functions of `random` that would draw from the global generator.
GLOBAL_RANDOM = {"random", "randint", "randrange", "choice", "choices", "sample", "shuffle", "seed"}


# The trio driver, its transports and subscriptions, and the member process are the I/O
# layer (DESIGN.md, layer 2): exactly these files, not the core, may do I/O.
IO_LAYER = {"driver.py", "transport.py", "subscriptions.py", "member_process.py"}


def _core_files() -> list[pathlib.Path]:
    paths = pathlib.Path(prism.swim.__file__).parent.glob("*.py")
    return sorted(path for path in paths if path.name not in IO_LAYER)


def test_swim_exports_are_sorted_and_resolve() -> None:
    assert prism.swim.__all__ == sorted(prism.swim.__all__)
    for name in prism.swim.__all__:
        assert getattr(prism.swim, name) is not None


def test_swim_core_does_not_import_io_the_codec_or_raft() -> None:
    for path in _core_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in BANNED, f"{path.name} imports {module}"
                assert not module.startswith(("prism.wire", "prism.raft", "prism.sim")), (
                    f"{path.name} imports {module}"
                )


def test_swim_core_never_uses_the_global_random() -> None:
    for path in _core_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
            ):
                assert node.attr not in GLOBAL_RANDOM, f"{path.name} calls random.{node.attr}"
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                raise AssertionError(f"{path.name} imports names from random")
