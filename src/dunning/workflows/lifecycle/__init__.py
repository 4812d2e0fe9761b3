"""The lifecycle workflow: renewal notices, pre-dunning, trial prompts, upgrade prompts, the annual-switch offer."""
