"""The commands beside build-sgs: inspect's text and picture (describe, render), parse-captions,
eval-tsg and eval-dsg. Each reads what build-sgs or a parser wrote; none is on a sample's path."""
