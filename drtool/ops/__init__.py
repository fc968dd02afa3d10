"""Use cases: each module is one operation a command runs, written against settings and adapters."""
