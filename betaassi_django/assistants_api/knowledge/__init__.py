"""Knowledge in the embedded API: files, vector stores (ingestion, search) and the ``file_search`` tool of runs
(docs/knowledge.md)."""
