"""The on-disk format version. Bump it on any change a reader of the old
format would misread (column added/removed/retyped, convention changed)."""

SCHEMA_VERSION = 4   # 2: TextNode.negated (issue 17); 3: host token and patch features
#                       (caption_token, token_span, frame_patch; issue 15); 4: DSG shots (issue 27), no shard
#                       list in manifest.json, per-file sizes in shard.json, hidden merged shards (issue 23)
FORMAT_NAME = "finsta-sgs"
