"""The host's disk budget: no sparse disk image is promised more space than the host has.

Every writable layer the agent makes is a sparse ext4 image (runtime/disk.py): workspace
disks, per-sandbox scratch disks, the base-layer cache.  A sparse image costs only what is
written, so without bookkeeping the images' sizes add up to far more than the host's free
space (a 100 GB ``--disk`` on a host with 70 GB free), and the host filesystem -- not the
image -- fills first.  :class:`DiskBudget` reserves each image's *full* size: a new image, or a
grown one, must fit in

    free space of the host filesystem  -  what live images may still write  -  safety margin

where "what an image may still write" is ``size - allocated`` (``st_blocks * 512``): the
filesystem's free space already excludes the bytes images have written.  So the images can
always be filled to their sizes at once and the host still keeps ``disk_free_margin_gb``.

One budget per data dir per process (:func:`host_budget`): the workspace manager and the
runtime's host environment of an agent share it.  Several *processes* on one host each count
only their own images (their writes still show in the free space): give each its own margin
or its own filesystem.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from mags.errors import NotEnoughDiskSpace

log = logging.getLogger(__name__)

GB = 1024**3


def gb_text(n: int) -> str:
    """Bytes as GB for messages: ``20``, ``7.5``."""
    value = max(0, n) / GB
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def allocated_bytes(path: Path) -> int:
    """What an image has actually written to the host filesystem (0 if it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


class DiskBudget:
    """Reservations of sparse images on one filesystem (thread-safe: disks are made in threads)."""

    def __init__(
        self,
        root: Path,
        margin_bytes: int,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.root = root
        self.margin_bytes = max(0, margin_bytes)
        self._statvfs = statvfs
        self._images: dict[Path, int] = {}  # image -> size it may grow to (bytes)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ accounting
    def free_bytes(self) -> int:
        st = self._statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _outstanding(self, image: Path, size: int) -> int:
        return max(0, size - allocated_bytes(image))

    def outstanding_bytes(self) -> int:
        """What the live images may still write, in all."""
        return sum(self._outstanding(p, s) for p, s in list(self._images.items()))

    def available_bytes(self) -> int:
        """What a new image may be promised now (may be negative when the host filled up)."""
        return self.free_bytes() - self.outstanding_bytes() - self.margin_bytes

    # ------------------------------------------------------------------ reservations
    def reserve(self, image: Path, size_bytes: int, what: str = "disk") -> None:
        """Promise ``image`` room to grow to ``size_bytes`` (new or resized); refuse if it does not fit.

        Call it before creating or growing the image.  A shrink always fits.
        """
        with self._lock:
            old = self._images.get(image)
            before = 0 if old is None else self._outstanding(image, old)
            delta = self._outstanding(image, size_bytes) - before
            if delta > 0:
                available = self.free_bytes() - self.outstanding_bytes() - self.margin_bytes
                if delta > available:
                    more = "" if old is None else f" more (to grow it to {gb_text(size_bytes)} GB)"
                    raise NotEnoughDiskSpace(
                        f"not enough disk space on this host: {gb_text(available)} GB free, "
                        f"{gb_text(delta)} GB asked{more} for {what}"
                    )
            self._images[image] = size_bytes

    def could_fit_later(self, size_bytes: int) -> bool:
        """Whether ``size_bytes`` fits once other images give their reservations back."""
        return size_bytes <= self.free_bytes() - self.margin_bytes

    def fits_now(self, size_bytes: int) -> bool:
        return size_bytes <= self.available_bytes()

    def track(self, image: Path) -> None:
        """Count an image that already exists (found at start) at its current size, unchecked."""
        try:
            size = os.stat(image).st_size
        except OSError:
            return
        with self._lock:
            self._images[image] = size

    def forget(self, image: Path) -> None:
        """The image is gone (or was never made): its reservation returns to the budget."""
        with self._lock:
            self._images.pop(image, None)

    def images(self) -> dict[Path, int]:
        with self._lock:
            return dict(self._images)


_BUDGETS: dict[Path, DiskBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def host_budget(data_dir: Path, margin_gb: float) -> DiskBudget:
    """The budget of ``data_dir``'s filesystem shared by everything of this process using it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir.resolve()
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = DiskBudget(key, int(margin_gb * GB))
        else:
            budget.margin_bytes = max(0, int(margin_gb * GB))
        return budget
