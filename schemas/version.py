"""The on-disk format version. Bump it on any change a reader of the old
format would misread (column added/removed/retyped, convention changed)."""

SCHEMA_VERSION = 2   # 2: host token and patch features (caption_token, token_span, frame_patch)
FORMAT_NAME = "finsta-sgs"
