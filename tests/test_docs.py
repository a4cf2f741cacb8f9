"""The README's settings table is generated; it must match the code it documents."""

from pathlib import Path

from services.common.config import markdown_table
from services.common.probe import missing_folder

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_setting_as_the_code_defines_it() -> None:
    text = README.read_text()
    start = text.index("<!-- settings table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end of settings table -->")
    assert text[start:end].strip() == markdown_table()


def test_the_service_path_the_plugin_points_to_is_in_the_readme() -> None:
    """CheckHealth sends a user with a /tmp run folder to this section: it must exist and agree."""
    hint = missing_folder(Path("/tmp/zmqstream-1000"))
    text = README.read_text()
    assert "(README: Grafana installed as a service)" in hint
    assert "\n## Grafana installed as a service\n" in text
    section = text.split("\n## Grafana installed as a service\n", 1)[1].split("\n## ", 1)[0]
    install = (README.parent / "deploy" / "install.sh").read_text()
    assert "sudo make install" in section
    assert "run_dir = /run/zmqstream" in hint
    assert "run_dir = /run/zmqstream\n" in section
    assert "socket_group = grafana\n" in section
    assert "ZMQSTREAM_INSTALL_RUN_DIR:-/run/zmqstream}" in install
    assert "ZMQSTREAM_INSTALL_GROUP:-grafana}" in install
