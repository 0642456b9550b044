"""Test helpers shared by several test files, each defined once (import them as `helpers.<module>`)."""
