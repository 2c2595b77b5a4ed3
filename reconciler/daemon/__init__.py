"""The daemon (`reconciler run`): follow the state repo, reconcile, lead, serve probes and
metrics."""
