"""One module per pipeline stage: each holds its Luigi task and the plain functions it runs."""
