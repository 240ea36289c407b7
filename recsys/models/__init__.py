"""Models behind one contract (:class:`recsys.models.base.Model`)."""
