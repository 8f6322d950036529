"""`tigerwatch doctor` on a correct station, and on one broken in each checked way.

Access is checked as the daemon's user would meet it: run as root, the doctor runs in a child
that became `nobody` (root would create, rename and delete anywhere and hide the problem)."""

from __future__ import annotations

import grp
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import pytest
import yaml

from daemon.cli import main
from daemon.doctor import folders, setup
from daemon.doctor.verdicts import Level
from tests.daemon_support import mounted_tmpfs

NOBODY = (65534, 65534)
DESTINATIONS = ("review", "archive", "quarantine")


@dataclass
class Doctored:
    code: int
    lines: list[str]

    def line(self, start: str) -> str:
        found = [line for line in self.lines if start in line]
        assert found, f"no line with {start!r} in:\n" + "\n".join(self.lines)
        return found[0]


@dataclass
class Site:
    root: Path
    config: Path
    unit: Path
    owner: tuple[int, int]

    def doctor(self) -> Doctored:
        out = self.root / "doctor.out"
        code = _doctor_as(
            self.owner, ["doctor", "-c", str(self.config), "--unit", str(self.unit)], out
        )
        lines = out.read_text().splitlines()
        print("\n".join(lines))
        return Doctored(code, lines)


def _doctor_as(user: tuple[int, int], argv: list[str], out: Path) -> int:
    """`tigerwatch doctor` in a forked child, as `user` when we are root; its exit code."""
    for module in ("daemon.doctor.checks", "daemon.doctor.setup", "huggingface_hub"):
        importlib.import_module(module)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.dup2(fd, 1)
            sys.stdout = os.fdopen(fd, "w", buffering=1)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            code = main(argv)
        except BaseException as err:
            print(f"child failed: {err!r}")
        finally:
            sys.stdout.flush()
            os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("doctor still running after 120 s")


@pytest.fixture
def site(tiny_model_dir: Path) -> Iterator[Site]:
    """A station set up as the README says: owned by the daemon's user, setgid inbox, model
    folder complete, a unit that runs this configuration and may write every folder."""
    root = Path(tempfile.mkdtemp(prefix="tw-doctor-", dir="/tmp"))  # nobody must reach it
    owner = NOBODY if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    try:
        root.chmod(0o755)
        for name in ("inbox", "inbox/card-1", *DESTINATIONS, "data"):
            (root / name).mkdir()
        shutil.copytree(tiny_model_dir, root / "model")
        for path in [root, *root.rglob("*")]:
            os.chown(path, *owner)
        (root / "inbox").chmod(0o2770)
        config = root / "tigerwatch.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "paths": {"inbox": "inbox", **{name: name for name in DESTINATIONS}},
                    "database": {"url": "sqlite:///data/tigerwatch.db"},
                    "model": {"name_or_path": "model"},
                }
            )
        )
        unit = root / "tigerwatch.service"
        unit.write_text(
            "[Service]\n"
            f"ExecStart=/opt/tigerwatch/.venv/bin/tigerwatch run -c {config}\n"
            f"ReadWritePaths={root}\n"
        )
        yield Site(root, config, unit, owner)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a folder the daemon's user cannot write needs root")


def test_a_correct_station_is_all_ok(site: Site) -> None:
    result = site.doctor()
    assert [line for line in result.lines if not line.startswith("ok")] == []
    assert result.code == 0
    assert "card-1: create, rename, delete" in result.line("inbox sub-folder")
    assert "setgid" in result.line("setgid group")
    assert "complete, revision sha256:" in result.line("model ")


def test_a_missing_inbox_fails(site: Site) -> None:
    shutil.rmtree(site.root / "inbox")
    result = site.doctor()
    assert result.code == 2
    assert result.line("inbox ").startswith("fail")
    assert "does not exist" in result.line("inbox ")


def test_an_inbox_without_setgid_warns(site: Site) -> None:
    (site.root / "inbox").chmod(0o770)
    result = site.doctor()
    assert result.code == 1
    assert result.line("setgid group").startswith("warn")
    assert "chmod g+s" in result.line("setgid group")


def test_an_ftp_sub_folder_the_daemon_cannot_write_fails(site: Site) -> None:
    needs_root()
    subfolder = site.root / "inbox" / "card-1"
    os.chown(subfolder, 0, 0)  # made by another account with umask 022
    subfolder.chmod(0o755)
    result = site.doctor()
    assert result.code == 2
    line = result.line("inbox sub-folder")
    assert line.startswith("fail") and "Permission denied" in line and "chmod g+rwx" in line


@pytest.mark.parametrize("folder", ["archive", "data"])
def test_a_folder_the_daemon_cannot_write_fails(site: Site, folder: str) -> None:
    needs_root()
    os.chown(site.root / folder, 0, 0)
    (site.root / folder).chmod(0o755)
    result = site.doctor()
    assert result.code == 2
    role = "archive " if folder == "archive" else "database folder "
    assert result.line(role).startswith("fail")
    assert "Permission denied" in result.line(role)


def reconfigure(site: Site, section: str, values: object) -> None:
    settings = yaml.safe_load(site.config.read_text())
    settings[section] = values
    site.config.write_text(yaml.safe_dump(settings))


@pytest.mark.parametrize(
    ("part", "files"),
    [
        ("config", ["config.json"]),
        ("weights", ["model.safetensors"]),
        ("tokenizer", ["tokenizer.json", "vocab.json"]),
        ("image processor", ["processor_config.json"]),
    ],
)
def test_an_incomplete_model_folder_fails(site: Site, part: str, files: list[str]) -> None:
    for name in files:
        (site.root / "model" / name).unlink()
    result = site.doctor()
    assert result.code == 2
    assert f"lacks its {part} file(s)" in result.line("model ")


def test_model_weights_the_daemon_cannot_read_fail(site: Site) -> None:
    needs_root()
    weights = site.root / "model" / "model.safetensors"
    os.chown(weights, 0, 0)
    weights.chmod(0o600)
    result = site.doctor()
    assert result.code == 2
    assert "cannot read the weights" in result.line("model ")
    assert "chmod a+r" in result.line("model ")


def test_a_hub_model_not_in_the_cache_fails(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    reconfigure(site, "model", {"name_or_path": "openai/clip-vit-base-patch32"})
    result = site.doctor()
    assert result.code == 2
    line = result.line("model openai/clip-vit-base-patch32")
    assert line.startswith("fail") and "not in the Hugging Face cache" in line
    assert "download-model" in line


def test_an_inbox_of_another_group_than_files_group_warns(site: Site) -> None:
    needs_root()
    group = grp.getgrgid(site.owner[1]).gr_name
    reconfigure(site, "files", {"group": group})
    os.chown(site.root / "inbox", site.owner[0], 0)  # chown resets setgid: set it again
    (site.root / "inbox").chmod(0o2770)
    result = site.doctor()
    assert result.code == 1
    line = result.line("setgid group")
    assert line.startswith("warn") and f"files.group is {group}" in line
    assert f"chgrp {group}" in line


def test_a_destination_out_of_inodes_warns(site: Site) -> None:
    needs_root()
    # Plenty of space (tmpfs reserves none), 200 inodes.
    with mounted_tmpfs(site.root / "archive", "4g,nr_inodes=200") as archive:
        os.chown(archive, *site.owner)
        result = site.doctor()
    assert result.code == 1
    line = result.line(f"archive {site.root / 'archive'}: free space")
    assert line.startswith("warn") and "inodes free" in line


@pytest.mark.parametrize("broken", ["other config", "folders outside", "no unit"])
def test_a_unit_that_does_not_match_the_configuration(site: Site, broken: str) -> None:
    if broken == "other config":
        exec_start = "ExecStart=/x/tigerwatch run -c /etc/other.yaml"
        site.unit.write_text(f"[Service]\n{exec_start}\nReadWritePaths={site.root}\n")
    elif broken == "folders outside":
        site.unit.write_text(f"[Service]\nExecStart=/x/tigerwatch run -c {site.config}\n")
    else:
        site.unit.unlink()
    result = site.doctor()
    if broken == "other config":
        assert result.code == 2
        assert result.line("ExecStart").startswith("fail")
    elif broken == "folders outside":
        assert result.code == 2
        assert result.line("archive writable").startswith("fail")
        assert "ReadWritePaths" in result.line("archive writable")
    else:
        assert result.code == 1
        assert result.line("unit ").startswith("warn")


def test_a_nearly_full_destination_fails(site: Site) -> None:
    needs_root()
    with mounted_tmpfs(site.root / "archive", "1m") as archive:
        os.chown(archive, *site.owner)
        result = site.doctor()
    assert result.code == 2
    full = [line for line in result.lines if "archive" in line and "free space" in line]
    assert full[0].startswith("fail"), full


@pytest.mark.parametrize("polling", [False, True])
def test_network_mounts_warn_unless_polled(
    site: Site, monkeypatch: pytest.MonkeyPatch, polling: bool
) -> None:
    """No NFS server here: the mount table is the one part given as text, the inbox and the
    archive listed in it as NFS mounts, the database's folder as an SMB share."""
    mountinfo = site.root / "mountinfo"  # where the daemon's user can read it
    mountinfo.write_text(
        Path("/proc/self/mountinfo").read_text()
        + f"90 22 0:60 / {site.root / 'inbox'} rw - nfs4 server:/inbox rw\n"
        + f"91 22 0:61 / {site.root / 'archive'} rw - nfs4 server:/archive rw\n"
        + f"92 22 0:62 / {site.root / 'data'} rw - cifs //server/data rw\n"
    )
    real = folders.filesystem_type
    monkeypatch.setattr(folders, "filesystem_type", lambda path: real(path, mountinfo))
    reconfigure(site, "paths", {
        "inbox": [{"path": "inbox", "polling": polling}],
        **{name: name for name in DESTINATIONS},
    })  # fmt: skip
    result = site.doctor()
    assert result.code == 1
    inbox = result.line(f"inbox {site.root / 'inbox'}: file system")
    if polling:
        assert inbox.startswith("ok")
    else:
        assert inbox.startswith("warn") and "set polling: true" in inbox
    archive = result.line(f"archive {site.root / 'archive'}: file system")
    assert archive.startswith("warn") and "nfs4" in archive and "local disk" in archive
    database = result.line(f"database folder {site.root / 'data'}: file system")
    assert database.startswith("warn") and "cifs" in database
    assert result.line(f"review {site.root / 'review'}: file system").startswith("ok")


def test_the_mount_table_gives_the_deepest_mount(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /srv/nfs rw,relatime shared:20 - nfs4 server:/export rw\n"
    )
    assert folders.filesystem_type(Path("/srv/nfs/inbox"), mountinfo) == "nfs4"
    assert folders.filesystem_type(Path("/srv/nfsother"), mountinfo) == "ext4"
    assert folders.filesystem_type(Path("/var/lib"), mountinfo) == "ext4"


def test_bf16_on_a_cpu_without_native_support_warns(tmp_path: Path) -> None:
    avx2_only = tmp_path / "cpuinfo"
    avx2_only.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    cpu = setup.cpu_precision(avx2_only)
    assert cpu.level == Level.OK and "no native bf16" in cpu.detail
    native = tmp_path / "cpuinfo-bf16"
    native.write_text("flags\t\t: avx2 avx512f avx512_bf16\n")
    assert "native bf16 (avx512_bf16)" in setup.cpu_precision(native).detail
