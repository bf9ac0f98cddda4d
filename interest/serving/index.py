"""A nearest-neighbour index of the items one model version scores, for retrieval outside the tables.

The recommendations table covers the users the night saw. Anyone else, or a user re-encoded from
today's events, needs the nearest items in the same space, from the same model version: the embed
stage builds this index from exactly the vectors its recommendations were scored with (the model's
item table, new items at their category's mean; ``inference.scoring_table``) and stores it beside
the model, one per date, through the storage layer (so it lands on HDFS with the model).

Up to ``EXACT_MAX_ITEMS`` the index is exact (faiss ``IndexFlatIP``: a scan, and the same items as
the table). Above it, a scan of product-quantised codes (faiss fast scan: 4 bits per sub-vector,
an eighth of the vectors' bytes, compared in SIMD registers) picks ``REFINE_CANDIDATES`` candidates
and their exact inner products rank them (``PQ<m>x4fs,RFlat``). Item vectors are not of one norm
(popular items have longer ones): on such vectors graphs (HNSW: recall@10 0.80 at 1,000,000 items
whatever its breadth) and clusters (IVF: 0.92 with a third of the lists searched) lose items the
exact scan finds, while the quantised scan keeps them; ``benchmarks/ann_index.py`` measures them
(BENCHMARKS.md, "The nearest-neighbour index"). Above the threshold the night's own top-N is
ranked through this index too (``scoring.topn.top_n_unseen``: twice as fast at a million items);
below it the exact matrix product is as fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from interest import storage
from interest.errors import UserError
from interest.layout import index_root, partition

# Items up to which the index is an exact scan; above it the quantised scan with exact re-ranking,
# which answers faster there (BENCHMARKS.md, "The nearest-neighbour index")
EXACT_MAX_ITEMS = 200_000
PQ_MAX_SUBVECTORS = 64  # sub-vectors of the codes: the largest divisor of the width up to this
REFINE_CANDIDATES = 2000  # candidates of the quantised scan ranked exactly (at least 10 per result)
PQ_TRAIN_ITEMS = 200_000  # the codebooks are trained on a sample of this many items

INDEX_FILE, IDS_FILE, META_FILE = "items.faiss", "item_ids.json", "index.json"


class IndexNotFoundError(UserError, FileNotFoundError):
    """A model version has no index for the date asked (it was published before indexes, or not at all)."""


@dataclass(frozen=True)
class IndexMeta:
    """What an index was built from: it answers only for that model version's space."""

    model_version: str
    date: str
    kind: Literal["exact", "pq"]
    items: int
    dim: int


def drop_indexes(model_dir: str, dates: list[str]) -> list[str]:
    """Delete every version's index of ``dates`` (the dates retention dropped from the tables)."""
    base = index_root(model_dir)
    if not dates or not storage.exists(base):
        return []
    gone = []
    for version in storage.list_dirs(base):
        for date in dates:
            folder = storage.join(base, version, partition(date))
            if storage.exists(folder):
                storage.delete(folder)
                gone.append(folder)
    return gone


class ItemIndex:
    """Item ids and their vectors [N, D] behind a faiss index answering the largest inner products."""

    def __init__(self, index: Any, item_ids: np.ndarray, meta: IndexMeta):
        self.index, self.item_ids, self.meta = index, item_ids, meta

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        item_ids: np.ndarray,
        model_version: str,
        date: str,
        exact_max_items: int | None = None,
    ) -> ItemIndex:
        """vectors [N, D], row i the vector of item_ids[i]; exact up to ``exact_max_items``
        (default ``EXACT_MAX_ITEMS``), the quantised scan with exact re-ranking above."""
        import faiss

        exact_max_items = EXACT_MAX_ITEMS if exact_max_items is None else exact_max_items
        x = np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D]
        n, d = x.shape
        if len(item_ids) != n:
            raise ValueError(f"{len(item_ids)} item ids for {n} vectors")
        kind: Literal["exact", "pq"] = "exact" if n <= exact_max_items else "pq"
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
        else:
            m = max(s for s in range(1, min(d, PQ_MAX_SUBVECTORS) + 1) if d % s == 0)
            index = faiss.index_factory(d, f"PQ{m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
            sample = np.random.default_rng(0).choice(n, min(n, PQ_TRAIN_ITEMS), replace=False)
            index.train(x[np.sort(sample)])
        index.add(x)
        return cls(index, np.asarray(item_ids).astype(str), IndexMeta(model_version, date, kind, n, d))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best items of each query [B, D] by inner product: (item ids [B, k], scores [B, k]),
        best first; where fewer than k exist, ids are None and scores -inf."""
        scores, rows = self.search_rows(queries, k)  # [B, k] each; row -1 where none is left
        found = rows >= 0
        ids = np.where(found, self.item_ids[np.maximum(rows, 0)], np.array(None, dtype=object))
        return ids, np.where(found, scores, -np.inf).astype(np.float32)

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's answer: queries [B, D] -> (scores [B, k], rows of the vectors [B, k]), row -1
        where none is left (``scoring.topn.RowIndex``)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # [B, D]
        if q.shape[1] != self.meta.dim:
            raise ValueError(f"queries of width {q.shape[1]} against an index of width {self.meta.dim}")
        if self.meta.kind == "pq":
            self.index.k_factor = max(10, -(-REFINE_CANDIDATES // max(k, 1)))  # k * k_factor candidates
        return self.index.search(q, k)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as faiss's own bytes, so a Spark broadcast carries it to the executors."""
        import faiss

        return {"index": faiss.serialize_index(self.index), "item_ids": self.item_ids, "meta": self.meta}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import faiss

        self.index = faiss.deserialize_index(state["index"])
        self.item_ids, self.meta = state["item_ids"], state["meta"]

    def save(self, folder: str) -> str:
        """Write the index, its ids and, last, what it was built from to ``folder`` (any storage
        root). A folder without its ``index.json`` is incomplete and never loaded, so a run killed
        while saving, or re-saving, leaves nothing a reader would take for an index."""
        import faiss

        meta = storage.join(folder, META_FILE)
        if storage.exists(meta):
            storage.delete(meta)
        with storage.local_output(folder) as local:
            faiss.write_index(self.index, os.path.join(local, INDEX_FILE))
            with open(os.path.join(local, IDS_FILE), "w") as f:
                json.dump(self.item_ids.tolist(), f)
        storage.write_text(meta, json.dumps(asdict(self.meta), indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str) -> ItemIndex:
        """The index saved in ``folder``; IndexNotFoundError when there is none."""
        import faiss

        if not storage.exists(storage.join(folder, META_FILE)):
            raise IndexNotFoundError(f"no item index at {folder}: run the embed stage of that date with this model")
        with storage.local_copy(folder) as local:
            index = faiss.read_index(os.path.join(local, INDEX_FILE))
            with open(os.path.join(local, IDS_FILE)) as f:
                ids = np.asarray(json.load(f), dtype=str)
            with open(os.path.join(local, META_FILE)) as f:
                meta = IndexMeta(**json.load(f))
        return cls(index, ids, meta)
