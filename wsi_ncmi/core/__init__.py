"""What every stage stands on and nothing above: atomic writes, locks, settings files, registries, errors and their
exit codes, devices and cores, and the runners that drive a batch of slides or training jobs."""
