"""Running an apply or destroy: the run's view (context), its steps, its rollback, signals
during it, and reconcile(), which ties them together. Where the core, the kernel layer and
the store meet."""
