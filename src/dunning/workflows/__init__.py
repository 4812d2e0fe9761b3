"""The workflows the product runs, one package each on the one engine; the list is :mod:`dunning.workflows.all`."""
