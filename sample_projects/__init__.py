"""Sample projects: the run layouts real tools write, for tests and demos."""
