"""Data stage: raw archives → validated records → LMDB shards + manifest → splits."""
