"""Interaction data: readers, validation, filters, ids, splits and sequences."""
