"""Item content vectors: text (title, categories, tags) through a sentence model, or precomputed vectors.

- :mod:`.text` turns item metadata into one text per item and says what the text came from
  ("text", "categories" or "none": the fallback chain for items without a title).
- :mod:`.encoder` embeds texts with a sentence model (the optional ``content`` extra), caching every
  vector on disk keyed by model and text hash, so a catalogue update embeds only new or changed texts.
- :mod:`.vectors` reads any other precomputed vectors (an image model's, say) keyed by raw item id.
"""

from recsys.content.encoder import CachedEncoder, SentenceEncoder, TextEncoder
from recsys.content.text import NONE, item_texts
from recsys.content.vectors import read_vectors

__all__ = ["NONE", "CachedEncoder", "SentenceEncoder", "TextEncoder", "item_texts", "read_vectors"]
