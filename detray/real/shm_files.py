"""Files of the node's object store: where they live, their names, locks, mappings and cleanup.

Owns: choosing the memory directory (``/dev/shm`` or, when it is absent or
smaller than the store, a file-backed directory in the temp dir), naming a
store's directories and its object files, the lock protocol that pins a
mapped object across processes, sealing a file by hard link, copying a
sealed file, and removing what a dead store left behind. Must not: keep an
index of objects or decide capacity, spilling or deletion (``object_store``),
or know the byte layout inside a file (``shm_layout``).

Theory of operation. A store named N owns two directories, each mode 0700:
``<memory root>/detray-obj-N`` (objects in memory) and
``<spill root>/detray-obj-N.spill`` (objects on disk). Each holds ``.owner``,
a file the store's process keeps locked with ``flock(LOCK_EX)`` for its whole
life: the kernel drops that lock when the process dies, even by SIGKILL, so
``cleanup_stale`` tells a dead store's directories from a live one's without
pids (which are reused) and removes them.

One object is one file named after its id. A writer fills a hidden temp file
(``.tmp-...``, held with ``LOCK_EX`` while it writes) and seals it with
``link`` to the final name, which fails if the name exists: readers only
ever see complete files, and a sealed file is never written again. A reader
(``map_sealed``) opens the file, takes ``LOCK_SH``, checks that the name is
still linked, and maps it read-only; Python's ``mmap`` keeps a duplicate of
the descriptor, so the shared lock lives exactly as long as the mapping
object, which lives as long as any memoryview or numpy array made from it.
Whoever wants to spill or delete an object takes ``LOCK_EX`` without waiting
(``lock_exclusive_nowait``): failure means some process, this one included,
still has it mapped. Unlinking a mapped file never breaks the mapping; its
memory returns to the system when the last mapping goes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import mmap
import os
import re
import secrets
import shutil
import stat
import tempfile
import time

from detray.real import shm_layout
from detray.serialization import SerializedObject

logger = logging.getLogger(__name__)

NAME_PREFIX = "detray-obj-"
SPILL_SUFFIX = ".spill"
OWNER_FILE = ".owner"
TEMP_PREFIX = ".tmp-"
SHM_ROOT = "/dev/shm"
STALE_GRACE_S = 2.0
"""``cleanup_stale`` leaves an unowned directory younger than this alone: it may
belong to a store still between ``mkdir`` and locking its ``.owner``."""
LOCK_WAIT_S = 10.0
"""A reader waits at most this long for a shared lock (exclusive locks are held
only for an unlink or while a writer fills a file nobody can see yet)."""
LOCK_POLL_S = 0.001
COPY_CHUNK_BYTES = 1 << 26

BACKEND_AUTO = "auto"
BACKEND_SHM = "shm"
BACKEND_FILE = "file"
BACKENDS = (BACKEND_AUTO, BACKEND_SHM, BACKEND_FILE)

STORE_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,48}")
_READABLE_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
_HASHED_MARK = "~"


# --- names and places ------------------------------------------------------------------------


def object_file_name(object_id: str) -> str:
    """The file name of ``object_id``: the id itself when it is a plain file name
    (readable in ``ls``), else ``~`` and a digest (``~`` never starts a plain one)."""
    if _READABLE_ID_RE.fullmatch(object_id):
        return object_id
    return _HASHED_MARK + hashlib.blake2b(object_id.encode(), digest_size=20).hexdigest()


def new_store_name() -> str:
    return secrets.token_hex(8)


def check_store_name(name: str) -> str:
    if not STORE_NAME_RE.fullmatch(name):
        raise ValueError(f"object store name {name!r} must match {STORE_NAME_RE.pattern}")
    return name


def memory_dir(root: str, name: str) -> str:
    return os.path.join(root, f"{NAME_PREFIX}{name}")


def spill_dir(root: str, name: str) -> str:
    return os.path.join(root, f"{NAME_PREFIX}{name}{SPILL_SUFFIX}")


def shm_free_bytes(root: str = SHM_ROOT) -> int | None:
    """Bytes free in ``root`` (``/dev/shm``), or None when it is absent."""
    if not os.path.isdir(root):
        return None
    try:
        stats = os.statvfs(root)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def choose_memory_root(capacity_bytes: int, backend: str) -> tuple[str, str]:
    """(directory, backend) for a store of ``capacity_bytes``.

    ``auto`` takes ``/dev/shm`` when it exists and has ``capacity_bytes`` free,
    else falls back to files in the temp dir (as Ray does, with a warning);
    ``shm`` and ``file`` force one.
    """
    if backend not in BACKENDS:
        raise ValueError(f"object store backend {backend!r} is not one of {BACKENDS}")
    if backend == BACKEND_FILE:
        return tempfile.gettempdir(), BACKEND_FILE
    free_bytes = shm_free_bytes()
    if backend == BACKEND_SHM:
        if free_bytes is None:
            raise ValueError(f"object store backend 'shm' asked for, but {SHM_ROOT} is absent")
        return SHM_ROOT, BACKEND_SHM
    if free_bytes is not None and free_bytes >= capacity_bytes:
        return SHM_ROOT, BACKEND_SHM
    logger.warning(
        "object store: %s has %s bytes free, less than the store's %d: using files in %s "
        "instead (slower: page writeback)",
        SHM_ROOT, "no" if free_bytes is None else free_bytes, capacity_bytes, tempfile.gettempdir(),
    )
    return tempfile.gettempdir(), BACKEND_FILE


def disk_free_bytes(directory: str) -> tuple[int, int]:
    """(free bytes, total bytes) of the file system holding ``directory``."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize


# --- owned directories -----------------------------------------------------------------------


def create_owned_dir(path: str) -> int:
    """Make ``path`` (mode 0700) with a locked ``.owner``; returns the lock's descriptor.

    The lock lasts until the descriptor is closed or the process dies.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        raise FileExistsError(
            f"object store directory {path} exists: another store uses this name, or a dead "
            f"one left it (detray.real.object_store.cleanup_stale removes those)"
        ) from None
    fd = os.open(os.path.join(path, OWNER_FILE), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid {os.getpid()}\n".encode())
    return fd


def _owner_alive(path: str) -> bool:
    try:
        fd = os.open(os.path.join(path, OWNER_FILE), os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # another user's store: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def default_roots() -> list[str]:
    roots = [SHM_ROOT] if os.path.isdir(SHM_ROOT) else []
    temp = tempfile.gettempdir()
    return roots if temp in roots else [*roots, temp]


def cleanup_stale(roots: list[str] | None = None, grace_s: float = STALE_GRACE_S) -> list[str]:
    """Remove the directories of object stores whose process is gone; returns their paths.

    Looks at ``detray-obj-*`` directories in ``roots`` (default: ``/dev/shm``
    and the temp dir). A directory whose ``.owner`` lock is held belongs to a
    live store and is kept; so is an unowned one younger than ``grace_s``.
    """
    removed: list[str] = []
    now_s = time.time()
    for root in roots if roots is not None else default_roots():
        try:
            entries = sorted(os.listdir(root))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            path = os.path.join(root, entry)
            if not entry.startswith(NAME_PREFIX):
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            if now_s - info.st_mtime < grace_s or _owner_alive(path):
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(path)
                logger.info("object store: removed %s left by a dead store", path)
    return removed


# --- sealed files ----------------------------------------------------------------------------


def _temp_file(directory: str) -> tuple[str, int]:
    """A new hidden file in ``directory``, locked exclusively: (path, descriptor)."""
    path = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return path, fd


def _seal(temp_path: str, fd: int, final_path: str) -> None:
    """Link the filled temp file to its final name (fails if it exists), then drop the temp."""
    try:
        try:
            os.link(temp_path, final_path)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if os.path.lexists(final_path):  # no hard links on this file system: check, then rename
                raise FileExistsError(errno.EEXIST, "already sealed", final_path) from None
            os.rename(temp_path, final_path)
            temp_path = final_path  # nothing left to unlink below but the descriptor
    finally:
        if temp_path != final_path:
            os.unlink(temp_path)
        os.close(fd)


def write_sealed(directory: str, file_name: str, serialized: SerializedObject, *, is_error: bool) -> int:
    """Write one object into ``directory`` as ``file_name`` and seal it; returns its size.

    Raises ``FileExistsError`` when that object is already sealed there.
    """
    temp_path, fd = _temp_file(directory)
    try:
        size_bytes = shm_layout.write(fd, serialized, is_error=is_error)
    except BaseException:
        os.unlink(temp_path)
        os.close(fd)
        raise
    _seal(temp_path, fd, os.path.join(directory, file_name))
    return size_bytes


def copy_sealed(source_path: str, directory: str, file_name: str) -> int:
    """Copy a sealed file into ``directory`` under ``file_name`` (kernel copy); returns its size."""
    source_fd = os.open(source_path, os.O_RDONLY)
    try:
        size_bytes = os.fstat(source_fd).st_size
        temp_path, fd = _temp_file(directory)
        try:
            _copy_fd(source_fd, fd, size_bytes)
        except BaseException:
            os.unlink(temp_path)
            os.close(fd)
            raise
        _seal(temp_path, fd, os.path.join(directory, file_name))
    finally:
        os.close(source_fd)
    return size_bytes


def _copy_fd(source_fd: int, target_fd: int, size_bytes: int) -> None:
    done = 0
    try:
        while done < size_bytes:
            sent = os.sendfile(target_fd, source_fd, done, min(COPY_CHUNK_BYTES, size_bytes - done))
            if sent == 0:
                raise OSError(errno.EIO, f"source ended after {done} of {size_bytes} bytes")
            done += sent
        return
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP) or done:
            raise
    except AttributeError:
        pass
    while done < size_bytes:  # no sendfile between files here (e.g. macOS)
        chunk = os.pread(source_fd, min(COPY_CHUNK_BYTES, size_bytes - done), done)
        if not chunk:
            raise OSError(errno.EIO, f"source ended after {done} of {size_bytes} bytes")
        os.pwrite(target_fd, chunk, done)
        done += len(chunk)


def map_sealed(path: str, lock_wait_s: float = LOCK_WAIT_S) -> mmap.mmap | None:
    """Map the sealed file at ``path`` read-only, holding a shared lock while mapped.

    Returns None when there is no such file (never sealed, deleted or spilled,
    also when that happened while we opened it).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        deadline_s = time.monotonic() + lock_wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline_s:
                    raise TimeoutError(
                        f"object file {path} stayed locked for writing over {lock_wait_s} s"
                    ) from None
                time.sleep(LOCK_POLL_S)
        if os.fstat(fd).st_nlink == 0:
            return None  # unlinked between our open and our lock
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # keeps a dup of fd: the lock lives on
    finally:
        os.close(fd)


def lock_exclusive_nowait(path: str) -> int | None:
    """A descriptor of ``path`` holding ``LOCK_EX`` when nobody has it mapped, else None.

    The caller unlinks or not, then closes the descriptor. Raises
    ``FileNotFoundError`` when there is no such file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _writer_alive(temp_name: str) -> bool:
    pid_text = temp_name[len(TEMP_PREFIX) :].partition("-")[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_abandoned_temps(directory: str) -> list[str]:
    """Remove temp files whose writer died mid-write; returns them.

    A temp file is abandoned when the pid in its name is gone and nobody holds
    its lock (a reused pid only delays the sweep; ``close`` removes all).
    """
    removed: list[str] = []
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.startswith(TEMP_PREFIX):
            continue
        path = os.path.join(directory, entry)
        if _writer_alive(entry):
            continue  # it may still be between creating the file and locking it
        try:
            fd = lock_exclusive_nowait(path)
        except FileNotFoundError:
            continue
        if fd is None:
            continue  # a live writer
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return removed
