"""Crash-safe file moves, their recovery after a crash, and sidecar files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from daemon.delivery.naming import (
    PARTIAL_PREFIX as PARTIAL_PREFIX,
)
from daemon.delivery.naming import partial_name
from daemon.delivery.naming import (
    safe_filename as safe_filename,
)
from daemon.delivery.naming import (
    unique_destination as unique_destination,
)
from daemon.hashing import open_regular_file, sha256_file, sha256_stream

logger = logging.getLogger(__name__)

# link() is refused on filesystems without hard links (vfat, exfat, some FUSE/SMB mounts),
# and when an inode already has the maximum number of links.
NO_HARD_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)
# Some filesystems (certain FUSE and network mounts) cannot fsync a directory at all.
_DIR_FSYNC_UNSUPPORTED_ERRNOS = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


class ContentChangedError(OSError):
    """The file to move no longer holds the bytes that were recorded (and classified)."""


@dataclass(frozen=True)
class Entry:
    """One name to act on: ``name`` inside the open folder ``dir_fd``, or a path (dir_fd None).

    A claimed inbox file is reached through its folder's descriptor, so no link on the way
    to it can be followed after the walk; ``shown`` names it in messages.
    """

    name: str
    dir_fd: int | None = None
    shown: str = ""

    @staticmethod
    def at(path: Path) -> Entry:
        return Entry(str(path), None, str(path))

    def lstat(self) -> os.stat_result:
        return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)

    def open(self, flags: int) -> int:
        return os.open(self.name, flags, dir_fd=self.dir_fd)

    def fsync_folder(self) -> None:
        if self.dir_fd is None:
            fsync_directory(Path(self.name).parent)
        else:
            _fsync_fd(self.dir_fd, self.shown)


# ---------------------------------------------------------------------------------------------
# fsync


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _fsync_fd(fd, str(path))
    finally:
        os.close(fd)


def _fsync_fd(fd: int, shown: str) -> None:
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED_ERRNOS:
            raise
        logger.debug("directory fsync not supported for %s: %s", shown, err)


def fsync_file_data(source: Entry) -> None:
    """Flush a file written by someone else (an FTP server need not fsync) before we move it."""
    try:
        fd = source.open(os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError as err:
        logger.debug("cannot open %s to fsync it, moving it anyway: %s", source.shown, err)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_parents(directory: Path) -> None:
    """Create ``directory`` and missing ancestors, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_directory(created.parent)
        logger.debug("created directory %s", created)


# ---------------------------------------------------------------------------------------------
# Moving


def move_durably(source: Path, destination: Path, *, sha256: str | None = None) -> None:
    """Move a regular file or symlink to ``destination``; never overwrite, never lose it.

    On return the file exists only at ``destination`` and both directories are synced.
    On an exception the file is still at ``source`` (nothing half-moved is left behind).
    Raises FileExistsError when ``destination`` is taken, ContentChangedError when ``sha256``
    is given and the file does not hold those bytes.
    """
    move_entry(Entry.at(source), destination, sha256=sha256)


def move_entry(source: Entry, destination: Path, *, sha256: str | None = None) -> None:
    """move_durably for an Entry; with ``sha256`` only those very bytes are ever placed."""
    source_stat = _require_file_or_link(source)
    if sha256 is not None and not stat.S_ISREG(source_stat.st_mode):
        raise ContentChangedError(errno.ESTALE, "no longer a regular file", source.shown)
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(destination))
    _make_parents(destination.parent)
    if stat.S_ISREG(source_stat.st_mode):
        fsync_file_data(source)
    if _uploaded_by_another_account(source_stat):
        # A hard link would keep the uploader's inode, which its owner may write to after the
        # classification: place the daemon's own verified copy instead.
        _move_across_filesystems(source, destination, source_stat, sha256)
        return
    if sha256 is not None:
        _require_content(source, source_stat, sha256)
    try:
        os.link(source.name, destination, src_dir_fd=source.dir_fd, follow_symlinks=False)
    except OSError as err:
        _move_without_link(source, destination, source_stat, err, sha256)
        return
    if sha256 is not None:
        _require_placed_unchanged(source, destination, source_stat)
    fsync_directory(destination.parent)
    _unlink_source_or_undo(source, destination, source_stat)
    logger.debug("moved %s -> %s (hard link)", source.shown, destination)


def _uploaded_by_another_account(source_stat: os.stat_result) -> bool:
    return stat.S_ISREG(source_stat.st_mode) and source_stat.st_uid != os.geteuid()


def _require_file_or_link(source: Entry) -> os.stat_result:
    source_stat = source.lstat()
    if stat.S_ISDIR(source_stat.st_mode):
        raise IsADirectoryError(errno.EISDIR, "cannot move a directory", source.shown)
    if not (stat.S_ISREG(source_stat.st_mode) or stat.S_ISLNK(source_stat.st_mode)):
        raise OSError(errno.EINVAL, "not a regular file or symlink", source.shown)
    return source_stat


def _require_content(source: Entry, source_stat: os.stat_result, sha256: str) -> None:
    """Hash the very inode about to be moved: anything else than the recorded bytes stays."""
    with open_regular_file(Path(source.name), dir_fd=source.dir_fd) as reader:
        before = os.fstat(reader.fileno())
        digest = sha256_stream(reader)
        after = os.fstat(reader.fileno())
    if not (_same_version(source_stat, before) and _same_version(before, after)):
        raise ContentChangedError(errno.ESTALE, "changed while being checked", source.shown)
    if digest != sha256:
        raise ContentChangedError(errno.ESTALE, "content differs from its SHA-256", source.shown)


def _same_version(first: os.stat_result, second: os.stat_result) -> bool:
    """Same inode, same size, same mtime: nobody wrote to it in between."""
    same_size_and_time = (first.st_size, first.st_mtime_ns) == (second.st_size, second.st_mtime_ns)
    return os.path.samestat(first, second) and same_size_and_time


def _require_placed_unchanged(source: Entry, destination: Path, hashed: os.stat_result) -> None:
    """A writer that still holds the file open may append after the hash: then undo."""
    placed = destination.lstat()
    if not _same_version(hashed, placed):
        _undo_destination(destination, placed)
        raise ContentChangedError(errno.ESTALE, "written to during the move", source.shown)


def _move_without_link(
    source: Entry,
    destination: Path,
    source_stat: os.stat_result,
    link_error: OSError,
    sha256: str | None,
) -> None:
    if link_error.errno == errno.EXDEV:
        _move_across_filesystems(source, destination, source_stat, sha256)
    elif link_error.errno in NO_HARD_LINK_ERRNOS:
        logger.debug("hard link refused for %s (%s), renaming", source.shown, link_error)
        _rename_no_clobber(source, destination)
        if sha256 is not None and not _same_version(source_stat, destination.lstat()):
            os.rename(destination, source.name, dst_dir_fd=source.dir_fd)  # put it back
            raise ContentChangedError(errno.ESTALE, "written to during the move", source.shown)
        fsync_directory(destination.parent)
        source.fsync_folder()
        logger.debug("moved %s -> %s (rename)", source.shown, destination)
    else:
        raise link_error


def _rename_no_clobber(source: Entry, destination: Path) -> None:
    # Tiny race: a file created at `destination` between this check and rename() would be
    # replaced. Only reached where link() is unavailable; the daemon is the only writer of its
    # destination folders, so the window is accepted rather than pulling in renameat2 via ctypes.
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(destination))
    os.rename(source.name, destination, src_dir_fd=source.dir_fd)


def _publish_no_clobber(temporary: Path, destination: Path) -> None:
    """Give a fully written temp file its final name in the same directory, never overwriting."""
    try:
        os.link(temporary, destination, follow_symlinks=False)
    except OSError as err:
        if err.errno not in NO_HARD_LINK_ERRNOS:
            raise
        _rename_no_clobber(Entry.at(temporary), destination)
        return
    temporary.unlink()


def _unlink_source_or_undo(source: Entry, destination: Path, moved: os.stat_result) -> None:
    """Remove the source if it is still the inode moved; if that fails, undo the destination."""
    try:
        now = source.lstat()
        if not os.path.samestat(now, moved):
            # Something was published onto the name meanwhile: a new arrival, not ours to delete.
            logger.info("%s: replaced during the move; the new file stays", source.shown)
            return
        os.unlink(source.name, dir_fd=source.dir_fd)
    except FileNotFoundError:
        logger.debug("source %s vanished during the move; %s holds it", source.shown, destination)
    except OSError:
        _undo_destination(destination, destination.lstat())
        raise
    source.fsync_folder()


def _undo_destination(destination: Path, placed: os.stat_result) -> None:
    # Only remove the inode we placed there ourselves.
    with contextlib.suppress(FileNotFoundError):
        if os.path.samestat(destination.lstat(), placed):
            destination.unlink()
            fsync_directory(destination.parent)
            logger.debug("undid %s: the source stays where it was", destination)


def _move_across_filesystems(
    source: Entry, destination: Path, source_stat: os.stat_result, sha256: str | None
) -> None:
    """Copy to a temp name, verify, publish without overwriting, then delete the source.

    The copy is verified *before* it gets its final name, so a crash can never leave an
    unverified file under the final name for settle.py to mistake for a finished move.
    """
    temporary = destination.parent / partial_name(destination.name)
    try:
        _write_verified_copy(source, temporary, source_stat, sha256)
        _publish_no_clobber(temporary, destination)
    except BaseException:
        _remove_quietly(temporary)
        raise
    fsync_directory(destination.parent)
    _unlink_source_or_undo(source, destination, source_stat)
    logger.debug("moved %s -> %s (verified copy)", source.shown, destination)


def _write_verified_copy(
    source: Entry, temporary: Path, source_stat: os.stat_result, sha256: str | None = None
) -> None:
    if stat.S_ISLNK(source_stat.st_mode):
        _copy_symlink(source, temporary, source_stat)
        return
    source_digest = _copy_file_contents(source, temporary)
    if sha256 is not None and source_digest != sha256:
        raise ContentChangedError(errno.ESTALE, "content differs from its SHA-256", source.shown)
    _verify_copy(source, temporary, source_digest)


def link_target(link: Entry) -> str:
    # Not Path.readlink(): a Path normalises "a//b" and "./b", which would change the link.
    return os.readlink(link.name, dir_fd=link.dir_fd)


def _copy_symlink(source: Entry, temporary: Path, source_stat: os.stat_result) -> None:
    target = link_target(source)
    temporary.symlink_to(target)
    times = (source_stat.st_atime_ns, source_stat.st_mtime_ns)
    os.utime(temporary, ns=times, follow_symlinks=False)
    if link_target(Entry.at(temporary)) != target:
        raise OSError(errno.EIO, "symlink copy has a different target", str(temporary))


def _copy_file_contents(source: Entry, temporary: Path) -> str:
    """Copy bytes, mode and mtime into a new temp file, fsync it, return the source's SHA-256."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with open_regular_file(Path(source.name), dir_fd=source.dir_fd) as reader:
        before = os.fstat(reader.fileno())
        out_fd = os.open(temporary, flags, 0o600)
        try:
            digest = _pump(reader, out_fd)
            after = os.fstat(reader.fileno())
            _require_unchanged(source, before, after)
            # After the data: writing would bump the mtime again.
            os.fchmod(out_fd, stat.S_IMODE(after.st_mode))
            os.utime(out_fd, ns=(after.st_atime_ns, after.st_mtime_ns))
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
    return digest


def _pump(reader: io.FileIO, out_fd: int) -> str:
    """Copy all of ``reader`` to ``out_fd``; return the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    while chunk := reader.read(1 << 20):
        digest.update(chunk)
        _write_all(out_fd, chunk)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _require_unchanged(source: Entry, before: os.stat_result, after: os.stat_result) -> None:
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise OSError(errno.EAGAIN, "source changed while it was being copied", source.shown)


def _verify_copy(source: Entry, temporary: Path, source_digest: str) -> None:
    source_size = source.lstat().st_size
    copy_size = temporary.lstat().st_size
    if copy_size != source_size:
        raise OSError(
            errno.EIO, f"copy has {copy_size} bytes, source has {source_size}", str(temporary)
        )
    if sha256_file(temporary) != source_digest:
        raise OSError(errno.EIO, "copy's SHA-256 differs from the source", str(temporary))


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as err:
        logger.debug("could not remove temp file %s: %s", path, err)
        return
    with contextlib.suppress(OSError):
        fsync_directory(path.parent)


# ---------------------------------------------------------------------------------------------
# Sidecars


def write_sidecar(image_path: Path, text: str) -> Path:
    """Durably write ``text`` (UTF-8) to "<image name>.txt" beside the image; return its path."""
    directory = image_path.parent
    temporary = directory / partial_name(image_path.name + ".txt")
    try:
        _write_new_file(temporary, text.encode("utf-8"))
        sidecar = _publish_under_free_name(temporary, directory, image_path.name + ".txt")
    except BaseException:
        _remove_quietly(temporary)
        raise
    fsync_directory(directory)
    logger.debug("wrote sidecar %s", sidecar)
    return sidecar


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_under_free_name(temporary: Path, directory: Path, name: str) -> Path:
    # A name found free can be taken before we link to it; then look for the next one.
    for _attempt in range(10):
        candidate = unique_destination(directory, name)
        try:
            _publish_no_clobber(temporary, candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free sidecar name", str(directory / name))
