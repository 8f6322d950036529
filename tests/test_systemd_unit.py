"""The systemd unit agrees with the README's install steps and stays hardened."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIT = REPO_ROOT / "systemd" / "tigerwatch.service"
README = REPO_ROOT / "README.md"


def unit_settings() -> dict[str, list[str]]:
    """Every Key=value of the unit, a key given twice keeping both values in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def systemd_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Running under systemd")
    return text[start : text.index("\n## ", start + 1)]


def readme_commands() -> list[list[str]]:
    """The README's install block, one argument list per command (sudo and comments dropped)."""
    block = re.search(r"```sh\n(.*?)```", systemd_section(), re.DOTALL)
    assert block is not None, "no ```sh block under 'Running under systemd'"
    commands = []
    for line in block.group(1).splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] == "sudo":
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def the_command(name: str) -> list[str]:
    found = [words for words in readme_commands() if words[0] == name]
    assert len(found) == 1, f"README should run {name} once, found {found}"
    return found[0]


def test_unit_runs_as_the_user_and_group_the_readme_creates() -> None:
    group = the_command("groupadd")[-1]
    useradd = the_command("useradd")
    user, primary_group = useradd[-1], useradd[useradd.index("--gid") + 1]
    settings = unit_settings()

    assert (settings["User"], settings["Group"]) == ([user], [group])
    assert primary_group == group
    chown = [words for words in readme_commands() if words[0] == "chown"]
    assert [words[-2] for words in chown] == [f"{user}:{group}"]


def test_unit_may_write_every_data_folder_the_readme_creates() -> None:
    writable = [Path(path) for value in unit_settings()["ReadWritePaths"] for path in value.split()]
    mkdirs = [words for words in readme_commands() if words[0] == "mkdir"]
    created = [Path(arg.split("{")[0]) for w in mkdirs for arg in w if arg.startswith("/srv/")]

    assert created, mkdirs
    assert Path("/srv/tigerwatch") in writable
    for folder in created:
        assert any(folder.is_relative_to(root) for root in writable), folder
    assert unit_settings()["RequiresMountsFor"] == ["/srv/tigerwatch"]


def test_readme_paragraph_names_only_settings_the_unit_has() -> None:
    settings = unit_settings()
    # Capitalised like unit settings; READY=1 and friends are sd_notify messages.
    named = re.findall(r"`([A-Z][a-z]\w*)=([^`]*)`", systemd_section())

    assert named
    for key, value in named:
        assert key in settings, f"README names {key}= but the unit lacks it"
        if value:
            assert value in settings[key], f"README says {key}={value}, unit has {settings[key]}"


def test_unit_keeps_what_the_daemon_needs() -> None:
    settings = unit_settings()

    # torch's oneDNN needs writable+executable memory; sd_notify needs a local socket.
    assert "MemoryDenyWriteExecute" not in settings
    assert settings["RestrictAddressFamilies"] == ["AF_UNIX"]
    # Setting the configured group on new files calls chown; keeping setgid calls chmod.
    filters = " ".join(settings.get("SystemCallFilter", []))
    assert "privileged" not in filters and "chown" not in filters
    assert "RestrictSUIDSGID" not in settings
    assert "PrivateUsers" not in settings


def test_systemd_analyze_rates_the_unit_at_most_2_0() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    run = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "offline" in run.stderr and run.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline: {run.stderr.strip()}")
    exposure = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", run.stdout)

    assert exposure is not None, run.stdout + run.stderr
    assert float(exposure.group(1)) <= 2.0, run.stdout
