"""common/crypto."""
