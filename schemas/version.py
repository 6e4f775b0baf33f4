"""The on-disk format version. Bump it on any change a reader of the old
format would misread (column added/removed/retyped, convention changed)."""

SCHEMA_VERSION = 1
FORMAT_NAME = "finsta-sgs"
