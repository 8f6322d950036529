"""Crash-safe file moves, safe file names and sidecar files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import secrets
import shutil
import stat
import unicodedata
from collections.abc import Collection
from enum import StrEnum
from pathlib import Path

from daemon.hashing import open_regular_file, sha256_file

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".tigerwatch-partial-"
_TOKEN_CHARS = 16  # secrets.token_hex(8)
_NAME_MAX_BYTES = 255  # NAME_MAX on ext4, xfs, btrfs, tmpfs, vfat (in UTF-16 units there)
_PARTIAL_NAME_BYTES = _NAME_MAX_BYTES - len(PARTIAL_PREFIX) - _TOKEN_CHARS - 1
_SAFE_NAME_BYTES = 200  # leaves room for "-N" collision suffixes and ".txt" sidecars
_MAX_EXTENSION_CHARS = 16
_MAX_UNIQUE_ATTEMPTS = 100_000
_FALLBACK_STEM = "unnamed"

# link() is refused on filesystems without hard links (vfat, exfat, some FUSE/SMB mounts),
# and when an inode already has the maximum number of links.
_NO_HARD_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)
# Some filesystems (certain FUSE and network mounts) cannot fsync a directory at all.
_DIR_FSYNC_UNSUPPORTED_ERRNOS = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})

# Characters vfat/exfat/SMB refuse in names; replacing them keeps USB and network targets usable.
_NON_PORTABLE_CHARS = frozenset('\\:*?"<>|')
# Bidirectional overrides can disguise an extension ("photo\u202egpj.exe").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Cc: control chars (NUL, newline, tab, DEL, C1); Cs: lone surrogates from os.fsdecode;
# Zl/Zp: Unicode line and paragraph separators, which break log lines like a newline.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


class SettleOutcome(StrEnum):
    """What settle_move found and did for one half-finished move."""

    ALREADY_MOVED = "already_moved"
    COMPLETED = "completed"
    DESTINATION_TAKEN = "destination_taken"
    NOT_STARTED = "not_started"
    MISSING = "missing"


# ---------------------------------------------------------------------------------------------
# Names


def safe_filename(name: str) -> str:
    """Return a single, harmless path component derived from ``name``.

    Keeps Unicode letters and spaces; the extension is the last ".suffix" when it is short and
    alphanumeric (so ".jpg" alone becomes "unnamed.jpg").
    """
    component = name.rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join("_" if _is_unsafe_char(char) else char for char in component)
    cleaned = cleaned.rstrip(" .")
    stem, extension = _split_extension(cleaned)
    stem = stem.lstrip(" .-")
    stem = _truncate_utf8(stem, _SAFE_NAME_BYTES - len(extension.encode())).rstrip(" .")
    return (stem or _FALLBACK_STEM) + extension


def _is_unsafe_char(char: str) -> bool:
    if char in _NON_PORTABLE_CHARS or char in _BIDI_CONTROLS:
        return True
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _split_extension(name: str) -> tuple[str, str]:
    """Split off the last ".suffix" when it looks like a real extension (".JPG", ".webp")."""
    dot = name.rfind(".")
    suffix = name[dot + 1 :]
    if dot < 0 or not suffix or len(suffix) > _MAX_EXTENSION_CHARS or not suffix.isalnum():
        return name, ""
    return name[:dot], name[dot:]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    # "ignore" drops a multi-byte character cut in half at the end.
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", "ignore")


def unique_destination(
    directory: Path, name: str, *, reserved: Collection[Path] = frozenset()
) -> Path:
    """Return ``directory / name``, or the first free "stem-N.ext" when that is taken.

    `reserved` holds paths promised to other files that are not on disk yet (one batch may
    hold two IMG_0001.JPG). A free name can be taken by someone else before it is used:
    move_durably never overwrites, so a caller that gets FileExistsError simply asks again.
    """
    candidate = directory / name
    if not _path_taken(candidate) and candidate not in reserved:
        return candidate
    stem, extension = _split_extension(name)
    for number in range(1, _MAX_UNIQUE_ATTEMPTS):
        candidate = directory / f"{stem}-{number}{extension}"
        if not _path_taken(candidate) and candidate not in reserved:
            return candidate
    raise FileExistsError(errno.EEXIST, "no free name after many attempts", str(directory / name))


def _path_taken(path: Path) -> bool:
    # lstat, not exists(): a dangling symlink is a taken name.
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    return True


def _partial_name(final_name: str) -> str:
    token = secrets.token_hex(_TOKEN_CHARS // 2)
    return f"{PARTIAL_PREFIX}{token}-{_partial_suffix(final_name)}"


def _partial_suffix(final_name: str) -> str:
    # Cut by bytes so the temp name fits NAME_MAX; fsdecode keeps a cut character reversible.
    return os.fsdecode(os.fsencode(final_name)[:_PARTIAL_NAME_BYTES])


def _is_partial_of(entry_name: str, final_name: str) -> bool:
    if not entry_name.startswith(PARTIAL_PREFIX):
        return False
    rest = entry_name[len(PARTIAL_PREFIX) :]
    if len(rest) <= _TOKEN_CHARS or rest[_TOKEN_CHARS] != "-":
        return False
    return rest[_TOKEN_CHARS + 1 :] == _partial_suffix(final_name)


# ---------------------------------------------------------------------------------------------
# Hashes and fsync


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED_ERRNOS:
            raise
        logger.debug("directory fsync not supported for %s: %s", path, err)
    finally:
        os.close(fd)


def _fsync_file_data(path: Path) -> None:
    """Flush a file written by someone else (an FTP server need not fsync) before we move it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError as err:
        logger.debug("cannot open %s to fsync it, moving it anyway: %s", path, err)
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


def move_durably(source: Path, destination: Path) -> None:
    """Move a regular file or symlink to ``destination``; never overwrite, never lose it.

    On return the file exists only at ``destination`` and both directories are synced.
    On an exception the file is still at ``source`` (nothing half-moved is left behind).
    Raises FileExistsError when ``destination`` is taken.
    """
    source_stat = _require_file_or_link(source)
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(destination))
    _make_parents(destination.parent)
    if stat.S_ISREG(source_stat.st_mode):
        _fsync_file_data(source)
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError as err:
        _move_without_link(source, destination, source_stat, err)
        return
    fsync_directory(destination.parent)
    _unlink_source_or_undo(source, destination, source_stat)
    logger.debug("moved %s -> %s (hard link)", source, destination)


def _require_file_or_link(source: Path) -> os.stat_result:
    source_stat = source.lstat()
    if stat.S_ISDIR(source_stat.st_mode):
        raise IsADirectoryError(errno.EISDIR, "cannot move a directory", str(source))
    if not (stat.S_ISREG(source_stat.st_mode) or stat.S_ISLNK(source_stat.st_mode)):
        raise OSError(errno.EINVAL, "not a regular file or symlink", str(source))
    return source_stat


def _move_without_link(
    source: Path, destination: Path, source_stat: os.stat_result, link_error: OSError
) -> None:
    if link_error.errno == errno.EXDEV:
        _move_across_filesystems(source, destination, source_stat)
    elif link_error.errno in _NO_HARD_LINK_ERRNOS:
        logger.debug("hard link refused for %s (%s), renaming", source, link_error)
        _rename_no_clobber(source, destination)
        fsync_directory(destination.parent)
        fsync_directory(source.parent)
        logger.debug("moved %s -> %s (rename)", source, destination)
    else:
        raise link_error


def _rename_no_clobber(source: Path, destination: Path) -> None:
    # Tiny race: a file created at `destination` between this check and rename() would be
    # replaced. Only reached where link() is unavailable; the daemon is the only writer of its
    # destination folders, so the window is accepted rather than pulling in renameat2 via ctypes.
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(destination))
    source.rename(destination)


def _publish_no_clobber(temporary: Path, destination: Path) -> None:
    """Give a fully written temp file its final name in the same directory, never overwriting."""
    try:
        os.link(temporary, destination, follow_symlinks=False)
    except OSError as err:
        if err.errno not in _NO_HARD_LINK_ERRNOS:
            raise
        _rename_no_clobber(temporary, destination)
        return
    temporary.unlink()


def _unlink_source_or_undo(source: Path, destination: Path, placed: os.stat_result) -> None:
    """Remove the source; if that fails, remove our new destination so the file stays put."""
    try:
        source.unlink()
    except FileNotFoundError:
        logger.debug("source %s vanished during the move; %s holds the file", source, destination)
    except OSError:
        _undo_destination(destination, placed)
        raise
    fsync_directory(source.parent)


def _undo_destination(destination: Path, placed: os.stat_result) -> None:
    # Only remove the inode we placed there ourselves.
    with contextlib.suppress(FileNotFoundError):
        if os.path.samestat(destination.lstat(), placed):
            destination.unlink()
            fsync_directory(destination.parent)
            logger.debug("undid %s: the source could not be removed", destination)


def _move_across_filesystems(source: Path, destination: Path, source_stat: os.stat_result) -> None:
    """Copy to a temp name, verify, publish without overwriting, then delete the source.

    The copy is verified *before* it gets its final name, so a crash can never leave an
    unverified file under the final name for settle_move to mistake for a finished move.
    """
    temporary = destination.parent / _partial_name(destination.name)
    try:
        _write_verified_copy(source, temporary, source_stat)
        _publish_no_clobber(temporary, destination)
    except BaseException:
        _remove_quietly(temporary)
        raise
    fsync_directory(destination.parent)
    _unlink_source_or_undo(source, destination, destination.lstat())
    logger.debug("moved %s -> %s (copy across filesystems, verified)", source, destination)


def _write_verified_copy(source: Path, temporary: Path, source_stat: os.stat_result) -> None:
    if stat.S_ISLNK(source_stat.st_mode):
        _copy_symlink(source, temporary)
        return
    source_digest = _copy_file_contents(source, temporary)
    _verify_copy(source, temporary, source_digest)


def _link_target(link: Path) -> str:
    # Not Path.readlink(): a Path normalises "a//b" and "./b", which would change the link.
    return os.readlink(link)  # noqa: PTH115


def _copy_symlink(source: Path, temporary: Path) -> None:
    target = _link_target(source)
    temporary.symlink_to(target)
    shutil.copystat(source, temporary, follow_symlinks=False)
    if _link_target(temporary) != target:
        raise OSError(errno.EIO, "symlink copy has a different target", str(temporary))


def _copy_file_contents(source: Path, temporary: Path) -> str:
    """Copy bytes, mode and mtime into a new temp file, fsync it, return the source's SHA-256."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with open_regular_file(source) as reader:
        before = os.fstat(reader.fileno())
        out_fd = os.open(temporary, flags, 0o600)
        try:
            digest = _pump(reader, out_fd)
            _require_unchanged(source, before, os.fstat(reader.fileno()))
            # After the data: writing would bump the mtime again.
            shutil.copystat(source, temporary, follow_symlinks=False)
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


def _require_unchanged(source: Path, before: os.stat_result, after: os.stat_result) -> None:
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise OSError(errno.EAGAIN, "source changed while it was being copied", str(source))


def _verify_copy(source: Path, temporary: Path, source_digest: str) -> None:
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
# Recovery after a crash


def settle_move(source: Path, destination: Path, sha256: str | None) -> SettleOutcome:
    """Decide, from what exists on disk, how far an interrupted move got, and finish it.

    ``sha256`` is the recorded content hash (None for a symlink). Only a source that is provably
    the same as the destination is ever deleted.
    """
    source_exists = os.path.lexists(source)
    destination_exists = os.path.lexists(destination)
    if source_exists or destination_exists:
        # With neither present a temp copy may be all that is left: keep it for a human.
        _remove_stray_partials(destination)
    if not source_exists:
        return _settle_without_source(source, destination, destination_exists)
    if not destination_exists:
        return SettleOutcome.NOT_STARTED
    if not _same_file_or_content(source, destination, sha256):
        logger.debug("settle %s: %s holds something else", source, destination)
        return SettleOutcome.DESTINATION_TAKEN
    _finish_interrupted_move(source, destination)
    return SettleOutcome.COMPLETED


def _settle_without_source(
    source: Path, destination: Path, destination_exists: bool
) -> SettleOutcome:
    if not destination_exists:
        logger.debug("settle: neither %s nor %s exists", source, destination)
        return SettleOutcome.MISSING
    # After kill -9 (no power cut) the last steps may still sit only in the page cache.
    fsync_directory(destination.parent)
    if source.parent.is_dir():
        fsync_directory(source.parent)
    return SettleOutcome.ALREADY_MOVED


def _same_file_or_content(source: Path, destination: Path, sha256: str | None) -> bool:
    source_stat, destination_stat = source.lstat(), destination.lstat()
    if os.path.samestat(source_stat, destination_stat):
        return True  # the link step finished, the unlink did not
    if stat.S_ISLNK(source_stat.st_mode) and stat.S_ISLNK(destination_stat.st_mode):
        return _link_target(source) == _link_target(destination)
    if not (stat.S_ISREG(source_stat.st_mode) and stat.S_ISREG(destination_stat.st_mode)):
        return False
    destination_digest = sha256_file(destination)
    if sha256 is not None and destination_digest != sha256:
        return False
    # Also hash the source: if it changed since it was recorded, deleting it would lose data.
    return sha256_file(source) == destination_digest


def _finish_interrupted_move(source: Path, destination: Path) -> None:
    if destination.is_file() and not destination.is_symlink():
        _fsync_file_data(destination)
    fsync_directory(destination.parent)
    source.unlink()
    fsync_directory(source.parent)
    logger.debug("settle: finished move %s -> %s", source, destination)


def _remove_stray_partials(destination: Path) -> None:
    directory = destination.parent
    if not directory.is_dir():
        return
    # Also the temp files of its sidecar note: a crash inside write_sidecar leaves one, even
    # after the note itself was published.
    names = (destination.name, destination.name + ".txt")
    removed = False
    with os.scandir(directory) as entries:
        for entry in entries:
            if any(_is_partial_of(entry.name, name) for name in names):
                Path(entry.path).unlink()
                removed = True
                logger.debug("removed stray temp file %s", entry.path)
    if removed:
        fsync_directory(directory)


# ---------------------------------------------------------------------------------------------
# Sidecars


def write_sidecar(image_path: Path, text: str) -> Path:
    """Durably write ``text`` (UTF-8) to "<image name>.txt" beside the image; return its path."""
    directory = image_path.parent
    temporary = directory / _partial_name(image_path.name + ".txt")
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
