"""Calls and applications reach media only through its door (``pbx.media.engine``), so the
media plane can move to another process or engine without touching them.

Outside ``pbx/media/`` the server's packages may import the engine's door and the prompts
(data an application names); only the composition root (``pbx/server.py``) builds the
embedded engine on its port range, and the rtpengine one when configured.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOOR = {"pbx.media.engine", "pbx.media.prompt"}
COMPOSITION_ROOT = {"pbx/server.py": DOOR | {"pbx.media.ports", "pbx.media.rtpengine"}}


def media_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pbx.media"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pbx.media"))
    return found


def test_only_the_media_door_is_imported_outside_the_media_package():
    offenders = {}
    for package in ("pbx", "ivr", "router", "callbacks", "monitoring"):
        for path in (ROOT / package).rglob("*.py"):
            name = path.relative_to(ROOT).as_posix()
            if name.startswith("pbx/media/"):
                continue
            beyond = media_imports(path) - COMPOSITION_ROOT.get(name, DOOR)
            if beyond:
                offenders[name] = sorted(beyond)
    assert offenders == {}, f"import media through pbx.media.engine only: {offenders}"


def test_the_check_sees_imports_beyond_the_door(tmp_path: Path):
    sample = tmp_path / "sample.py"
    sample.write_text("from pbx.media.stream import RtpSession\nimport pbx.media.relay\n")
    assert media_imports(sample) == {"pbx.media.stream", "pbx.media.relay"}
