"""A pipeline process whose user is not in the socket group says so at start and exits."""

import grp
import shutil
import tempfile
from pathlib import Path

import pytest
from users import User


@pytest.mark.parametrize(
    "module", ["services.broker", "services.recorder", "services.generator"], ids=lambda m: m.split(".")[1]
)
def test_a_user_outside_the_socket_group_is_told_at_start_and_nothing_runs(
    module: str, stranger: User, grafana_user: User
) -> None:
    group = grp.getgrgid(grafana_user.groups[0]).gr_name
    parent = Path(tempfile.mkdtemp(prefix="zs-start-", dir="/tmp"))
    parent.chmod(0o755)  # the stranger may enter it, as /tmp
    run_dir = parent / "run"
    env = {"ZMQSTREAM_RUN_DIR": str(run_dir), "ZMQSTREAM_SOCKET_GROUP": group}
    try:
        result = stranger.python(["-m", module], env, timeout_s=20)
    finally:
        made = run_dir.exists()
        shutil.rmtree(parent)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if "socket_group" in line]
    assert len(said) == 1, result.stderr
    assert f"user {stranger.name} is not in group {group}" in said[0]
    assert f"usermod -aG {group} {stranger.name}" in said[0]
    assert not made  # nothing half made: no folder, no socket
