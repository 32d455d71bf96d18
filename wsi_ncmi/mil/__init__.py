"""MIL aggregators, the losses that train them (CE, focal, CMI-constrained CE, NCMI) and the training loop."""
