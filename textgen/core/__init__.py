"""The ground floor: errors, typed config, atomic writes, locks, memory figures, the progress line.

Imports nothing else of textgen; every other subpackage may import it."""
