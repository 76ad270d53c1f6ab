"""Storage: the object store interface (local dir, S3) and workspace snapshots synced to it.

Entry points: :func:`create_object_store`, :func:`mags.storage.sync.snapshot`,
:func:`~mags.storage.sync.restore`, :func:`~mags.storage.sync.gc`, and the subprocess
``python -m mags.storage.syncer`` that the host agent runs.
"""

from mags.storage.objectstore import ObjectInfo, ObjectMissing, ObjectStore, create_object_store

__all__ = ["ObjectInfo", "ObjectMissing", "ObjectStore", "create_object_store"]
