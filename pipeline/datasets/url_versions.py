"""URL videos' versions from their folders' listings, listed only as far as that pays.

A manifest names its videos one URL at a time; asking for each object's metadata costs one HEAD per
video per run. Videos that share an S3 folder can instead be read off that folder's listing
(ListObjectsV2: 1000 entries a page, each with size and ETag, the same version HEAD gives). But a page
costs what many HEADs cost (measured with boto3 on the local S3 test server: a full page ~87–109 ms of
driver CPU against ~2.1–2.5 ms a HEAD, ~40×; pages come one after another while HEADs go 16 at a
time; S3 prices a LIST like 12.5 HEADs), and the folder may hold 100k objects of which the manifest
names three. So a folder's first page is listed only once ``PAGE_COST`` of its URLs were met, and each
further page only while the pages listed so far answered ``PAGE_COST`` URLs each on average (the
manifest names its objects densely) and some URL lies past the listing's end. A sparse folder costs
its HEADs plus one page; a dense one, sorted as manifests made from listings or by id usually are, one
page per 1000 videos. (A dense folder named in random order stops after its first page: HEADs.)

S3 lists in key order: every name up to the last one a page shows is answered (absent from the
listing: ``missing_file``), later ones wait for the next page or a HEAD. GCS listings (pyarrow.fs)
cannot be paged, so gs:// videos keep their HEAD; HTTP cannot list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas.storage import list_versions_page, split_url

# The URLs a page must answer to be listed: 2.5x a full page's driver CPU in HEADs (measured ~38-44), for
# the page's latency (HEADs run in parallel, pages do not): a page of 1000 pays at 10 % density.
PAGE_COST = 100
PAGE_KEYS = 1000   # entries a page (S3's most)


@dataclass
class _Folder:
    """How far one S3 folder has been listed, and how many of the run's URLs were in it."""
    seen: int = 0                 # URL videos of this folder met so far (answered either way)
    answered: int = 0             # of them, those the listing answered
    pages: int = 0
    last: str = ""                # every name <= last is in ``versions`` or absent
    token: Optional[str] = None   # the next page's continuation token
    complete: bool = False
    failed: bool = False          # a page could not be listed: HEAD from now on
    versions: dict[str, list] = field(default_factory=dict)


class FolderListings:
    """One run's listings of the S3 folders its URL videos are in (one per :meth:`Dataset.tasks` pass)."""

    def __init__(self, missing: object) -> None:
        self.missing = missing   # what an object the listing shows absent is answered with
        self.folders: dict[str, _Folder] = {}

    def versions(self, urls: list[str]) -> dict[str, object]:
        """The version (or ``missing``) of each of ``urls`` its folder's listing answers, listing further
        pages when they pay; the URLs left out need a HEAD."""
        by_folder: dict[str, list[tuple[str, str]]] = {}
        for url in urls:
            scheme, bucket, key = split_url(url)
            folder, _, name = key.rpartition("/")
            if scheme == "s3" and name:
                by_folder.setdefault(f"s3://{bucket}/{folder}", []).append((url, name))
        answered: dict[str, object] = {}
        for folder, named in by_folder.items():
            state = self.folders.setdefault(folder, _Folder())
            state.seen += len(named)
            self._list_as_far_as_pays(folder, state, [name for _, name in named])
            here = {url: state.versions.get(name, self.missing) for url, name in named
                    if state.complete or name <= state.last}
            state.answered += len(here)
            answered.update(here)
        return answered

    @staticmethod
    def _list_as_far_as_pays(folder: str, state: _Folder, names: list[str]) -> None:
        """List pages while some of ``names`` lies past the listing's end and the next page pays: the
        first once ``PAGE_COST`` URLs of the folder were met, a further one while the pages listed have
        answered ``PAGE_COST`` URLs each (counting ``names`` they cover)."""
        wanted = max(names)
        while not state.complete and not state.failed and wanted > state.last:
            covered = state.answered + sum(name <= state.last for name in names)
            if (state.seen if state.pages == 0 else covered) < max(state.pages, 1) * PAGE_COST:
                return
            try:
                found, last, state.token = list_versions_page(folder, state.token, PAGE_KEYS)
            except (PermissionError, ConnectionError, FileNotFoundError):   # HEADs report per video
                state.failed = True
                return
            state.versions.update(found)
            state.pages += 1
            state.last = max(state.last, last)
            state.complete = state.token is None
