"""Bulk ingestion: where images come from (folders, manifests), the batched run, and the Dask backend."""
