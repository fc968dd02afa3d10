"""`make demo`: drtool's whole disaster-recovery cycle in a throwaway sandbox (see demo/run.py)."""
