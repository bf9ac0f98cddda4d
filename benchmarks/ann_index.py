"""The nearest-neighbour index: recall@10 against exact search, build time and query latency.

    python benchmarks/ann_index.py --items 100000 1000000

Item vectors as a trained item table has them: 64 wide, in 200 clusters (categories) of unequal
size, norms that vary with popularity (they are not unit vectors, which is why the index answers
the largest inner product, not the nearest cosine). Queries are user embeddings as the embed stage
makes them: the unit-normalised mean of 20 items drawn from 1 to 3 of the user's categories.

For each catalogue size: the exact index (faiss ``IndexFlatIP``), the shipped quantised scan with
exact re-ranking (``pq``: ``PQ<m>x4fs,RFlat`` as ``interest.serving.index`` builds it, at each
``--refine`` candidate count; the shipped count is ``REFINE_CANDIDATES``), and two it was measured
against: HNSW on the inner product (M 32, efConstruction 200, efSearch 256) and IVF (4 sqrt(n)
lists on the inner product, a third of them probed). Recall@10 is the share of the exact top 10
that an index returns, over ``--queries`` queries. Latency: one query at a time (p50 and p99 over
``--queries``) and batches of 100 (p50 and p99 over 50), with the threads faiss uses by default
(the machine's cores).

The embed job's top-N (``--tables job``): ``scoring.topn.top_n_unseen`` for ``--job-users`` users
with 50 seen items each, in the job's blocks of 256 users, by the exact product (TensorFlow, as
below the threshold) and through the shipped index (as above it): milliseconds per user, and the
recall@10 of the published list against the exact one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, table  # noqa: E402

sys.path.insert(0, str(ROOT))


def catalogue(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [n, d], the category of each) shaped like a trained item table."""
    rng = np.random.default_rng(seed)
    k = 200
    centres = rng.normal(size=(k, d)).astype(np.float32)
    sizes = rng.zipf(1.3, k).astype(np.float64)
    category = rng.choice(k, size=n, p=sizes / sizes.sum())
    vectors = centres[category] + 0.6 * rng.normal(size=(n, d)).astype(np.float32)
    popularity = rng.lognormal(0.0, 0.35, n).astype(np.float32)[:, None]  # norms vary, as trained ones do
    return (vectors * popularity / np.sqrt(d)).astype(np.float32), category


def users(vectors: np.ndarray, category: np.ndarray, m: int, seed: int) -> np.ndarray:
    """[m, d] unit user embeddings: the mean of 20 items from 1 to 3 categories."""
    rng = np.random.default_rng(seed)
    by_cat = {c: np.flatnonzero(category == c) for c in np.unique(category)}
    cats = np.array(list(by_cat))
    out = np.empty((m, vectors.shape[1]), np.float32)
    for i in range(m):
        chosen = rng.choice(cats, size=rng.integers(1, 4))
        items = np.concatenate([rng.choice(by_cat[c], size=20) for c in chosen])
        out[i] = vectors[rng.choice(items, 20)].mean(axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def latencies(index, queries: np.ndarray, batch: int, repeats: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of ``index.search`` on ``batch`` queries at a time."""
    times = []
    for r in range(repeats):
        q = queries[(r * batch) % len(queries) :][:batch]
        tic = time.perf_counter()
        index.search(q, 10)
        times.append((time.perf_counter() - tic) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def hnsw(vectors: np.ndarray):
    """HNSW on the inner product, as first shipped (M 32, efConstruction 200, efSearch 256)."""
    import faiss

    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    index.add(vectors)
    index.hnsw.efSearch = 256
    return index


def ivf(vectors: np.ndarray):
    """IVF on the inner product: 4 sqrt(n) lists, a third of them probed."""
    import faiss

    n, d = vectors.shape
    lists = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors[np.random.default_rng(0).choice(n, min(n, 50 * lists), replace=False)])
    index.add(vectors)
    index.nprobe = lists // 3
    return index


OTHERS = {"hnsw (M 32, efSearch 256)": hnsw, "ivf (4 sqrt(n) lists, a third probed)": ivf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--refine", type=int, nargs="+", default=None, help="candidate counts of pq (default: shipped)")
    parser.add_argument("--no-others", action="store_true", help="leave HNSW and IVF out")
    parser.add_argument("--tables", nargs="+", choices=["search", "job"], default=["search", "job"])
    parser.add_argument("--job-users", type=int, default=4096)
    args = parser.parse_args()

    import faiss

    from interest.serving import index as shipped

    refine = args.refine or [shipped.REFINE_CANDIDATES]
    print(f"Machine: {machine()}")
    print(
        f"faiss {faiss.__version__} ({faiss.get_compile_options()}), {faiss.omp_get_max_threads()} threads; "
        f"d={args.dim}, {args.queries} queries; shipped: exact up to {shipped.EXACT_MAX_ITEMS:,} items, "
        f"pq with {shipped.REFINE_CANDIDATES:,} candidates above\n"
    )
    if "job" in args.tables:
        job = [job_row(n, args.dim, args.job_users) for n in args.items]
        print(
            table(["items", "users", "exact ms/user", "index ms/user", "speed-up", "recall@10 of the list"], job) + "\n"
        )
    if "search" not in args.tables:
        return
    rows = []
    for n in args.items:
        vectors, category = catalogue(n, args.dim, seed=n)
        ids = np.arange(n).astype(str)
        queries = users(vectors, category, args.queries, seed=1)
        built: dict[str, object] = {}
        tic = time.perf_counter()
        built["exact"] = shipped.ItemIndex.build(vectors, ids, "bench", "2026-11-26", exact_max_items=n)
        seconds = {"exact": time.perf_counter() - tic}
        tic = time.perf_counter()
        pq = shipped.ItemIndex.build(vectors, ids, "bench", "2026-11-26", exact_max_items=0)
        pq_s = time.perf_counter() - tic
        for count in refine:
            label = f"pq, {count:,} candidates" + (" (shipped)" if count == shipped.REFINE_CANDIDATES else "")
            built[label], seconds[label] = WithCandidates(pq, count), pq_s
        if not args.no_others:
            for label, make in OTHERS.items():
                tic = time.perf_counter()
                built[label] = make(vectors)
                seconds[label] = time.perf_counter() - tic
        truth = built["exact"].search(queries, 10)[0]
        for label, index in built.items():
            if isinstance(index, (shipped.ItemIndex, WithCandidates)):
                found = index.search(queries, 10)[0]  # (ids, scores)
            else:
                found = ids[index.search(queries, 10)[1]]  # faiss: (scores, rows)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            one = latencies(index, queries, 1, args.queries)
            hundred = latencies(index, queries, 100, 50)
            rows.append([f"{n:,}", label, f"{recall:.3f}", f"{seconds[label]:.1f}", one, hundred])
        print(f"{n:,} items done", flush=True)
    print()
    print(
        table(
            [
                "items",
                "index",
                "recall@10",
                "build s",
                "1 query p50 ms",
                "1 query p99 ms",
                "100 queries p50 ms",
                "100 queries p99 ms",
            ],
            [
                [n, kind, recall, build, f"{one[0]:.2f}", f"{one[1]:.2f}", f"{hun[0]:.1f}", f"{hun[1]:.1f}"]
                for n, kind, recall, build, one, hun in rows
            ],
        )
    )


def job_row(n: int, d: int, m: int) -> list[object]:
    """The embed job's top 10 of ``m`` users with 50 seen items each over ``n`` items: exact and
    through the shipped quantised index (built as above the threshold)."""
    from interest.schema import FIRST_ITEM
    from interest.scoring.topn import top_n_unseen
    from interest.serving import index as shipped

    vectors, category = catalogue(n, d, seed=n)
    scoring = np.concatenate([np.zeros((FIRST_ITEM, d), np.float32), vectors])  # [V, D] as the job's
    queries = users(vectors, category, m, seed=1)
    rng = np.random.default_rng(2)
    seen = [rng.choice(n, 50, replace=False) + FIRST_ITEM for _ in range(m)]
    index = shipped.ItemIndex.build(vectors, np.arange(n).astype(str), "bench", "2026-11-26", exact_max_items=0)
    top_n_unseen(queries[:256], scoring, seen[:256], 10)  # traced once, as in a running job
    tic = time.perf_counter()
    exact, _ = top_n_unseen(queries, scoring, seen, 10)
    exact_s = time.perf_counter() - tic
    tic = time.perf_counter()
    found, _ = top_n_unseen(queries, scoring, seen, 10, index=index)
    index_s = time.perf_counter() - tic
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))
    return [
        f"{n:,}",
        f"{m:,}",
        f"{exact_s / m * 1e3:.2f}",
        f"{index_s / m * 1e3:.2f}",
        f"{exact_s / index_s:.1f}x",
        f"{recall:.3f}",
    ]


class WithCandidates:
    """The shipped pq index searched with another candidate count."""

    def __init__(self, index, count: int):
        self.index, self.count = index, count

    def search(self, queries: np.ndarray, k: int):
        from interest.serving import index as shipped

        before, shipped.REFINE_CANDIDATES = shipped.REFINE_CANDIDATES, self.count
        try:
            return self.index.search(queries, k)
        finally:
            shipped.REFINE_CANDIDATES = before


if __name__ == "__main__":
    main()
