"""The nearest-neighbour index: recall@10 against exact search, build time and query latency.

    python benchmarks/ann_index.py --items 100000 1000000

Item vectors as a trained item table has them: 64 wide, in 200 clusters (categories) of unequal
size, norms that vary with popularity (they are not unit vectors, which is why the index answers
the largest inner product, not the nearest cosine). Queries are user embeddings as the embed stage
makes them: the unit-normalised mean of 20 items drawn from 1 to 3 of the user's categories.

For each catalogue size: the exact index (faiss ``IndexFlatIP``) and HNSW as ``interest.serving.index``
builds it (M, efConstruction and efSearch as shipped, on the inner product turned into a distance).
Recall@10 is the share of the exact top 10 that HNSW returns, over 1,000 queries. Latency: one
query at a time (p50 and p99 over 1,000) and batches of 100 (p50 and p99 over 50), with the
threads faiss uses by default (the machine's cores).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()

    import faiss

    from interest.serving.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, ItemIndex

    print(f"Machine: {machine()}")
    print(
        f"faiss {faiss.__version__} ({faiss.get_compile_options()}), {faiss.omp_get_max_threads()} threads; "
        f"d={args.dim}, HNSW M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION} efSearch={HNSW_EF_SEARCH}\n"
    )
    rows = []
    for n in args.items:
        vectors, category = catalogue(n, args.dim, seed=n)
        ids = np.arange(n).astype(str)
        queries = users(vectors, category, args.queries, seed=1)
        built = {}
        for kind, limit in (("exact", n), ("hnsw", 0)):
            tic = time.perf_counter()
            built[kind] = ItemIndex.build(vectors, ids, "bench", "2026-11-26", exact_max_items=limit)
            build_s = time.perf_counter() - tic
            one = latencies(built[kind], queries, 1, args.queries)
            hundred = latencies(built[kind], queries, 100, 50)
            rows.append([f"{n:,}", kind, f"{build_s:.1f}", one, hundred])
        truth, _ = built["exact"].search(queries, 10)
        got, _ = built["hnsw"].search(queries, 10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))
        for row in rows[-2:]:
            row.insert(2, "1.000" if row[1] == "exact" else f"{recall:.3f}")
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


if __name__ == "__main__":
    main()
