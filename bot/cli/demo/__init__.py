"""`conveyor demo`: a whole start-and-STOP run on this machine."""
