"""Whether a process of this host is still alive, for the files processes leave behind."""

import os


def pid_alive(pid: int) -> bool:
    """True while `pid` exists (another user's process included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
