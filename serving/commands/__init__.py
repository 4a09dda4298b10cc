"""One module per command group of the serving stage (see ``serving.cli``)."""
