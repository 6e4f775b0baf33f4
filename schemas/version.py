"""The on-disk format version. Bump it on any change a reader of the old
format would misread (column added/removed/retyped, convention changed)."""

SCHEMA_VERSION = 2  # 2: TextNode.negated (issue 17)
FORMAT_NAME = "finsta-sgs"
