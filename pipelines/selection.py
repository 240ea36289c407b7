"""Which trained model the pipeline publishes: the one-standard-error rule over validation metrics.

A validation metric is a mean over users, so it carries sampling error: on a log of 600 users NDCG@10
moves by about 0.009 between two draws of users (:func:`recsys.evaluation.metrics.standard_error`), and a
model whose checkpoint was picked as the best of many epochs on those same users looks better than it is.
Among the models within ``within_se`` standard errors of the highest validation metric, the rule takes
the one of lowest capacity (:meth:`recsys.models.base.Model.capacity`), the highest metric among equals;
this is the one-standard-error rule of Breiman et al. (1984) and Hastie et al. (The Elements of
Statistical Learning, 7.10). ``within_se = 0``, or a metric without a recorded standard error, takes the
highest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    label: str
    reason: str


def choose(trained: dict[str, dict], metric: str, within_se: float) -> Choice:
    """The model to publish among ``trained`` (label -> train info with ``val`` metrics and ``capacity``).

    Parameters
    ----------
    trained : at least one model; ``info["val"][metric]`` and, for the rule, ``info["val"][metric + "_se"]``.
    metric : the validation metric compared, e.g. ``"ndcg_10"``.
    within_se : how many of the best model's standard errors count as level; 0 = the highest metric.
    """
    if not trained:
        raise ValueError("no trained model to choose from")
    val = {label: float(info["val"][metric]) for label, info in trained.items()}
    best = max(val, key=lambda label: val[label])
    se = trained[best]["val"].get(f"{metric}_se")
    if within_se <= 0 or se is None or se != se:  # nan: fewer than 2 validation users
        return Choice(best, f"highest validation {metric} ({val[best]:.4f})")
    floor = val[best] - within_se * float(se)
    level = [label for label in val if val[label] >= floor]
    label = min(level, key=lambda x: (int(trained[x].get("capacity", 0)), -val[x]))
    if label == best:
        return Choice(best, f"highest validation {metric} ({val[best]:.4f}); no simpler model within "
                            f"{within_se:g} SE ({se:.4f})")
    return Choice(label, f"validation {metric} {val[label]:.4f} is within {within_se:g} SE ({se:.4f}) of "
                         f"{best}'s {val[best]:.4f}, and {label} is the simpler model (capacity "
                         f"{trained[label].get('capacity', 0)} < {trained[best].get('capacity', 0)})")
