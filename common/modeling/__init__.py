"""common/modeling."""
