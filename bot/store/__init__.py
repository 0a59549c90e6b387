"""Store functions: keyword-only arguments, session first; they return a model or None.

Each module covers one entity. Callers own the transaction (``Database.session()``), so a state
change and its audit event commit together or not at all.
"""
