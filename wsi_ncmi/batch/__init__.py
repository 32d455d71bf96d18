"""Running many independent pieces of work: slides through a stage (local processes or Dask, resumable, one status
row each) and training jobs side by side, with progress, Ctrl-C and SIGTERM handled the same way."""
