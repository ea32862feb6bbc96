"""One writer per output folder at a time.

Two runs writing one folder interleave their files and can leave an index (dataset.json, a CSV)
that lists what the other run removed or never finished. An exclusive ``fcntl.flock`` on a lock
file, held for the whole run, makes the second run refuse at once. The kernel drops the lock when
its holder exits, however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def folder_lock(folder: Path, lock_path: Path, activity: str, noun: str = "folder") -> Iterator[None]:
    """Hold the lock of ``folder`` (file ``lock_path``) or raise ``ValueError`` naming the holder.

    ``activity`` and ``noun`` word the message: "DS: another conversion (pid 12) is writing this dataset".
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_path, "a+", encoding="ascii")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            for _ in range(20):  # the holder writes its pid right after locking
                fh.seek(0)
                holder = fh.read().strip()
                if holder:
                    break
                time.sleep(0.05)
            raise ValueError(f"{folder}: {activity} (pid {holder or 'unknown'}) is writing this {noun}; "
                             f"wait for it to finish, then run again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock
