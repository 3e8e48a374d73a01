"""Writing files: every file the project writes appears whole or not at all, and a full disk or a read-only folder
is one clear error naming the folder, never a traceback from deep inside or a half-written entry.

    from cremad_lit.io import write_atomic, write_json
    write_json(run_dir / "metrics.json", metrics)
    write_atomic(cache_dir / "clip.npz", lambda handle: np.savez(handle, **arrays))

The bytes are produced in memory first, so the space a write needs is known before it starts; they go to a temporary
file beside the target, which is flushed and renamed over it (a rename within a folder is atomic). On any failure the
temporary file is removed, so the next run after freeing space finds only whole files and continues.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cremad_lit.errors import Stop

# ENOSPC: disk full; EDQUOT: quota; EFBIG: a file-size limit (RLIMIT_FSIZE, or the file system's own).
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}


class DiskFull(Stop, OSError):
    """No room left for a write: the folder, the bytes needed and the bytes free."""


class NotWritable(Stop, OSError):
    """A folder that refuses writes (read-only file system, permissions)."""


def free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def human(size: int | None) -> str:
    if size is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def explain_write_error(error: OSError, path: Path, needed: int | None = None) -> OSError:
    """A DiskFull or NotWritable naming the folder for a write that failed for lack of space or permission; any
    other OSError as it is."""
    folder = Path(path).parent
    if isinstance(error, Stop):
        return error
    if error.errno in NO_SPACE:
        return DiskFull(
            f"no space left in {folder} to write {Path(path).name}: {human(needed)} needed, "
            f"{human(free_bytes(folder))} free ({os.strerror(error.errno)}). Nothing partial was left behind: free "
            "some space (or point paths.cache_dir / paths.log_dir at a larger disk) and run the same command again; "
            "it continues from the whole files already written."
        )
    if error.errno in REFUSED:
        return NotWritable(
            f"cannot write into {folder} ({os.strerror(error.errno)}): point the run at a writable folder "
            "(paths.cache_dir=... for the prepared cache, paths.log_dir=... for runs), or data.cache=off to decode "
            "on the fly without a cache."
        )
    return error


def write_atomic(path: str | os.PathLike, write: Callable, durable: bool = False) -> None:
    """Call `write(handle)` into memory, then put the bytes at `path` through a temporary file and a rename (its
    folder made if missing). `durable`: fsync before the rename (checkpoints). Raises DiskFull / NotWritable."""
    path = Path(path)
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getbuffer()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise explain_write_error(error, path, len(data)) from error
    finally:
        data.release()
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, payload) -> None:
    write_atomic(path, lambda handle: handle.write(json.dumps(payload, indent=2, default=str).encode()))


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))


def remove_dead_writers_files(folder: str | os.PathLike, recursive: bool = False) -> int:
    """Remove the temporary files of writers killed mid-write (write_atomic names them `.<name>.<pid>.tmp`): never
    results, only litter; a live process's file is left alone. Returns how many were removed."""
    removed = 0
    for path in Path(folder).glob("**/.*.tmp" if recursive else ".*.tmp"):
        pid = path.name.rsplit(".", 2)[-2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            removed += 1
        except PermissionError:  # alive, another user's
            continue
    return removed
