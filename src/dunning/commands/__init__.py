"""``dunning`` commands that belong to one workflow, registered on the app by :mod:`dunning.cli`."""
