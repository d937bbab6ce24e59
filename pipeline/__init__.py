"""pipeline: the jobs on Ray (inference), their configuration and the ``tilewise`` command line."""
