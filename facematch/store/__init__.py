"""Storage: the SQLite catalogue (source of truth), its schema, and the FAISS indexes derived from it.

Storage never imports the face models: it checks embeddings against ``facematch.types`` alone.
"""
