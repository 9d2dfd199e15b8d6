"""One trainer per run folder, and no trainer outliving its launcher.

``RunLock``: ``{run_dir}/.lock`` holds ``{"host", "pid", "started"}`` of the rank-0 process that owns the folder.
It is created with O_EXCL (atomic on local and NFSv3+ filesystems) and its mtime is refreshed while training
(``touch``), so a lock left by a dead trainer is recognised as stale: on the same host its pid is gone; on another
host it has not been refreshed for ``stale_s`` seconds. A stale lock is taken over with a warning; a live one
refuses to start, naming the owner.

``exit_with_launcher``: a torchrun/deepspeed worker whose launcher is killed is re-parented and would otherwise
keep training (and saving into the folder a new run uses); a daemon thread notices and ends the worker.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
PARENT_POLL_S = 2.0


class RunLocked(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str | Path, stale_s: float = 600.0):
        self.path = Path(run_dir) / LOCK_NAME
        self.stale_s = stale_s
        self.held = False

    def owner(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def stale_reason(self, owner: Optional[dict]) -> Optional[str]:
        """Why the current lock can be taken over, or None when its owner may be alive."""
        if owner is None:
            return "unreadable lock file"
        if owner.get("host") == socket.gethostname():
            return None if _pid_alive(int(owner.get("pid", -1))) else f"pid {owner.get('pid')} is gone"
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "lock removed"
        return f"not refreshed for {age:.0f} s" if age > self.stale_s else None

    def acquire(self) -> None:
        """Take the lock or raise ``RunLocked`` naming the owner and the fix."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):  # a takeover races with other starters; O_EXCL decides
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner and (owner.get("host"), owner.get("pid")) == (me["host"], me["pid"]):
                    self.held = True  # this process already holds it
                    return
                reason = self.stale_reason(owner)
                if reason is None:
                    raise RunLocked(
                        f"{self.path.parent} is in use by another trainer (host {owner['host']}, pid {owner['pid']}, "
                        f"since {owner.get('started')}): stop it, or use another run_dir; if it is dead on another "
                        f"host, delete {self.path}"
                    ) from None
                log.warning("taking over stale lock %s (%s): %s", self.path, owner, reason)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise RunLocked(f"could not take {self.path}: other trainers keep starting in {self.path.parent}")

    def touch(self) -> None:
        """Mark the lock alive (other hosts judge staleness by its mtime)."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            owner = self.owner()
            if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False


def launched_by_a_launcher() -> bool:
    """True in a worker started by torchrun / deepspeed (they set these; a plain run sets none)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def exit_with_launcher(poll_s: float = PARENT_POLL_S) -> None:
    """End this process when its parent (the launcher) dies; call before anything is built."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:  # re-parented: the launcher is gone
                log.error("launcher (pid %d) is gone; stopping this worker so it cannot keep training", parent)
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
