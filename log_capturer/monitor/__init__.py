"""Container monitors: one thread per container reading its log in short windows."""
