"""The project folder: parameters, pool state, locks, atomic writes, cycle steps, caches, the built-in data."""
