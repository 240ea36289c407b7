"""Full-ranking evaluation: pure metric functions (metrics.py) and batched scoring (evaluator.py)."""
