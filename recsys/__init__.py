"""recsys: recommendations from learned user and item embeddings.

Subpackages
-----------
data        read, validate, filter, encode, split and sequence interaction logs
models      the model contract and every model (popularity, ALS, BPR, item2vec, two-tower)
evaluation  full-ranking metrics and the batched evaluator
export      bundles that the ``serving`` package loads
"""

__version__ = "0.1.0"
