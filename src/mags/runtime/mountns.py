"""Give the agent's process a private mount namespace, so its mounts die with it.

The agent mounts workspace disks and the scratch filesystem.  In the host's mount
namespace a SIGKILLed agent would leave them mounted; in a private namespace (with mount
events from the host still propagating *in*, as a slave) the kernel unmounts them when the
last process in it exits.  ``unshare(CLONE_NEWNS)`` only works before the process starts
threads, so this runs first thing in ``mags server``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19


def enter_private_mount_namespace() -> bool:
    """Unshare the mount namespace (root only); True on success, False (logged) otherwise."""
    if os.geteuid() != 0:
        return False
    if threading.active_count() > 1:
        log.warning("not isolating mounts: the process already runs threads")
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        log.warning("not isolating mounts: unshare failed: %s", os.strerror(ctypes.get_errno()))
        return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None) != 0:
        log.warning("mount namespace: cannot make / a slave: %s", os.strerror(ctypes.get_errno()))
    return True
