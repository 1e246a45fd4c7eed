"""Files that hold either their old contents or their new ones, never a torn mix.

``atomic_open(path)`` hands out a hidden temporary file in the target's directory; when the block
ends it is flushed, fsynced and ``os.replace``d onto the target (atomic on POSIX within one file
system), and the directory is fsynced. A block that raises (KeyboardInterrupt included) removes its
temporary file and leaves the target untouched. Temporary names are ``.<name>.tmp-<pid>-<random>``:
hidden, and never ending like the target (``.pt``, ``.csv``), so nothing mistakes them for the real
file; ``remove_stale_temp_files`` deletes the ones a killed writer (SIGKILL skips the clean-up) left.

Checkpoints, metrics files, evaluation results and generated samples are all written through it.
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from typing import IO, Iterator, List, Optional

TMP_MARK = ".tmp-"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform / file system; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", newline: Optional[str] = None) -> Iterator[IO]:
    """``open(path, mode)`` for writing, replacing ``path`` only once the block has finished."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode must start with 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}-", dir=directory)
    try:
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:  # also KeyboardInterrupt: clean up, then let it propagate
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def remove_stale_temp_files(directory: str) -> List[str]:
    """Delete the temporary files a killed writer left in ``directory``; returns their paths."""
    removed = []
    for path in glob.glob(os.path.join(directory, f".*{TMP_MARK}*")):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
