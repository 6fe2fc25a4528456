"""A bounded, seeded sample of a dataset's rows, read through the storage layer.

Classification looks at a sample, never at the whole dataset, so its cost does not grow with
the data: ``n`` rows drawn uniformly without replacement with a seeded generator (the same data
and seed give the same sample, hence the same suggestions), returned in random order so that any
prefix of the sample is itself a uniform sample (the detectors probe a prefix first).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from govern.errors import GovernError, StorageError

__all__ = ["sample_rows"]


def sample_rows(dataset: ds.Dataset, n: int, seed: int, *, location: str | None = None) -> tuple[pa.Table, int]:
    """(a uniform sample of at most ``n`` rows in random order, the dataset's row count).

    Reads only the row groups holding sampled rows (``Dataset.take``). Storage failures raise
    :class:`StorageError` quoting ``location`` (as the catalog states it), never a server path."""
    try:
        total = dataset.count_rows()
        rng = np.random.default_rng(seed)
        if total <= n:
            table = dataset.to_table()
            order = rng.permutation(table.num_rows)
        else:
            picked = np.sort(rng.choice(total, size=n, replace=False))
            table = dataset.take(pa.array(picked))
            order = rng.permutation(n)
    except GovernError:
        raise
    except (OSError, pa.ArrowException) as exc:
        where = f"dataset location {location!r}" if location else "the dataset"
        raise StorageError(f"{where} could not be sampled: {type(exc).__name__}", location=location) from exc
    return table.take(pa.array(order, pa.int64())), total
