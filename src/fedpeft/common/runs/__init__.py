"""Run folders: what every run leaves behind for a person to read."""
