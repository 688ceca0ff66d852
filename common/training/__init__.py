"""common/training."""
