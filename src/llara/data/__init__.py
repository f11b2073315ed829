"""Data stage: download with pinned checksums, parsing of every source, Parquet splits with stored candidates."""
