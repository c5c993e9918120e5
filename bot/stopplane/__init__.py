"""The stop plane: the stop intent, the reset steps, deferral, the finalizer, notices."""
