"""Export trained vectors as a serving bundle (Annoy index + arrays + manifest) and publish bundles."""

from recsys.export.ann import AnnConfig
from recsys.export.bundle import export_bundle, export_model
from recsys.export.publish import list_bundles, publish, rollback

__all__ = ["AnnConfig", "export_bundle", "export_model", "list_bundles", "publish", "rollback"]
