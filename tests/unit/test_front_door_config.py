"""scripts/front-door-config: besides the Kamailio folder, it prints what every site's
configuration needs to know the front door, and that text is a valid server configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pbx.configuration.server import build_config
from settings.located_yaml import load_yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "front-door-config"


def site_fragment(tmp_path: Path, listen: str) -> str:
    result = subprocess.run([str(SCRIPT), "--out", str(tmp_path / "door"), "--listen", listen,
                             "--site", "madrid=127.0.0.1:5060", "--home", "1001=madrid"],
                            capture_output=True, text=True, timeout=30, check=True)
    assert (tmp_path / "door" / "kamailio.cfg").is_file()
    lines = result.stdout.splitlines()
    return "\n".join(lines[lines.index("sip:"):]) + "\n"


def test_the_printed_lines_make_the_sites_treat_the_front_door_as_one(tmp_path: Path) -> None:
    fragment = site_fragment(tmp_path, "127.0.0.1:5080")
    assert '  front_doors: ["127.0.0.1:5080"]' in fragment.splitlines()
    sip = build_config(load_yaml(fragment, "site.yaml"), var_dir=Path("var"), base_dir=None).sip
    assert sip.is_front_door(("127.0.0.1", 5080))
    assert not sip.is_front_door(("127.0.0.1", 5081))


def test_a_front_door_off_loopback_is_also_trusted_by_the_rate_limits(tmp_path: Path) -> None:
    fragment = site_fragment(tmp_path, "192.0.2.10:5060")
    sip = build_config(load_yaml(fragment, "site.yaml"), var_dir=Path("var"), base_dir=None).sip
    assert sip.is_front_door(("192.0.2.10", 5060))
    assert set(sip.protection.trusted) == {"127.0.0.0/8", "::1/128", "192.0.2.10/32"}


@pytest.mark.parametrize("listen", ["0.0.0.0:5060", "door.example:5060"])
def test_an_address_that_is_not_the_one_it_sends_from_asks_for_it(tmp_path: Path, listen: str) -> None:
    fragment = site_fragment(tmp_path, listen)
    assert 'front_doors: ["HOST:5060"]' in fragment and "# HOST: the IP address" in fragment
