"""finsta's data contract: records, Arrow/Zarr format, shard store. Imports nothing else of finsta."""
from schemas.version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
