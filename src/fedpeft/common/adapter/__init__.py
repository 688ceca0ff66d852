"""common/adapter."""
