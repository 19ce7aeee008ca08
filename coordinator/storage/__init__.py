"""Storage: the database (SQLAlchemy 2) and the content-addressed blob store."""

from coordinator.storage.blobs import BlobStore, BlobWriter
from coordinator.storage.db import Database, utcnow

__all__ = ["BlobStore", "BlobWriter", "Database", "utcnow"]
