"""The daemon: wiring of the hub loop, the reconciler thread and the worker pool (design §2)."""
