"""Tools of the source checkout (not installed with the package): the documentation generator."""
