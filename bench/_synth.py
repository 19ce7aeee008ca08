"""Synthetic tables for the benchmarks, generated fast and cached in bench/.data/.

``brand``: uid (SHA-256 hex), converted (0/1), spend (double), note (text).
``publisher``: uid (SHA-256 hex), exposed (0/1), segment (one of 8). 40% of the publisher's
users are brand customers (the overlap is 40% of the smaller table).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"


def tables(n_brand: int, n_publisher: int, overlap: float = 0.4) -> tuple[Path, Path]:
    """Write (once) and return the Parquet paths of the two tables."""
    import duckdb

    DATA.mkdir(exist_ok=True)
    brand = DATA / f"brand-{n_brand}.parquet"
    publisher = DATA / f"publisher-{n_brand}-{n_publisher}.parquet"
    shared = int(min(n_brand, n_publisher) * overlap)
    con = duckdb.connect()
    if not brand.exists():
        con.execute(
            f"""COPY (SELECT sha256('u' || i::VARCHAR) AS uid,
                       (hash(i * 7) % 10 < 2)::BIGINT AS converted,
                       (hash(i * 13) % 50000) / 100.0 AS spend,
                       'CANARY-bench' AS note
                FROM range({n_brand}) t(i)) TO '{brand}' (FORMAT parquet)"""
        )
    if not publisher.exists():
        # the first `shared` publisher users are brand users; the rest are new ids
        con.execute(
            f"""COPY (SELECT CASE WHEN i < {shared} THEN sha256('u' || i::VARCHAR)
                            ELSE sha256('p' || i::VARCHAR) END AS uid,
                       (hash(i * 3) % 2)::BIGINT AS exposed,
                       'seg' || (hash(i * 5) % 8)::VARCHAR AS segment
                FROM range({n_publisher}) t(i)) TO '{publisher}' (FORMAT parquet)"""
        )
    con.close()
    return brand, publisher


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its children) peak RSS in MB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children
