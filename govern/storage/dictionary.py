"""Read the string columns Parquet stores dictionary-encoded as Arrow dictionaries.

Parquet writers dictionary-encode low-cardinality columns (a region, a department, a
diagnosis): a few distinct strings plus small integer indices. By default pyarrow decodes them
into one string per row — for 6M rows, 6M string copies — and DuckDB, given plain strings,
hashes and compares every one of them again. Read as ``dictionary<int32, string>`` they stay
indices: the scan skips the decode, a value-only mask runs once per distinct value
(:mod:`govern.mask.execute_arrow`), and DuckDB groups and filters dictionary vectors without
decoding. Values and nulls are unchanged; only the Arrow encoding differs, and consumers that
need plain strings (the HTTP rows, whose schema clients see) keep reading the plain dataset.

Which columns: those whose chunks in the first file's row groups all have a dictionary page.
A column dictionary-encoded in some files only is still read correctly, as a dictionary
(pyarrow builds one where the file has none), just without the saving.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

__all__ = ["dictionary_columns", "has_dictionaries", "prune", "with_dictionaries"]


def dictionary_columns(dataset: ds.Dataset) -> list[str]:
    """String columns the first Parquet file stores with a dictionary page in every row group."""
    if not isinstance(dataset, ds.FileSystemDataset) or not isinstance(dataset.format, ds.ParquetFileFormat):
        return []
    fragment = next(iter(dataset.get_fragments()), None)
    if fragment is None:
        return []
    metadata = fragment.metadata
    strings = {f.name for f in dataset.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)}
    if metadata.num_row_groups == 0 or not strings:
        return []
    found: list[str] = []
    first = metadata.row_group(0)
    for i in range(first.num_columns):
        name = first.column(i).path_in_schema
        if name in strings and all(metadata.row_group(g).column(i).has_dictionary_page
                                   for g in range(metadata.num_row_groups)):
            found.append(name)
    return found


def with_dictionaries(dataset: ds.Dataset) -> ds.Dataset:
    """The same files, partitions and scan options, with :func:`dictionary_columns` typed
    ``dictionary<int32, string>``; ``dataset`` itself when no column qualifies."""
    columns = dictionary_columns(dataset)
    if not columns:
        return dataset
    assert isinstance(dataset, ds.FileSystemDataset)
    old = dataset.format
    fmt = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=columns,
                                           coerce_int96_timestamp_unit=old.read_options.coerce_int96_timestamp_unit),
        default_fragment_scan_options=old.default_fragment_scan_options,
    )
    schema = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in columns else f
                        for f in dataset.schema], metadata=dataset.schema.metadata)
    fragments = [fmt.make_fragment(f.path, dataset.filesystem, partition_expression=f.partition_expression)
                 for f in dataset.get_fragments()]
    return ds.FileSystemDataset(fragments, schema, fmt, dataset.filesystem)


def has_dictionaries(dataset: ds.Dataset) -> bool:
    return any(pa.types.is_dictionary(f.type) for f in dataset.schema)


def prune(dataset: ds.Dataset, filter: pc.Expression | None) -> ds.Dataset:
    """The files and Parquet row groups whose partition values and statistics may satisfy
    ``filter``, for a scan that then applies ``filter`` exactly itself.

    Why not hand ``filter`` to the scanner: pyarrow evaluates a predicate on a dictionary
    column by decoding every row (``region IN ('EU')`` costs more than reading the column);
    evaluated on the dictionary once per batch (:func:`govern.mask.predicate_arrow.evaluate`)
    it costs next to nothing. Pruning is the scanner's own, so the same row groups are skipped.
    """
    if filter is None or not isinstance(dataset, ds.FileSystemDataset):
        return dataset
    fragments = []
    for fragment in dataset.get_fragments(filter=filter):
        if isinstance(fragment, ds.ParquetFileFragment):
            fragment = fragment.subset(filter=filter)
            if fragment.num_row_groups == 0:
                continue
        fragments.append(fragment)
    return ds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
