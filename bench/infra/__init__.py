"""Run infrastructure: what a run is (identity, hashing, record), where it is kept (store, files),
how a study is driven (runner, launch) and where else it is logged (trackers).

Nothing is imported here: each module imports what it needs.
"""
