"""agent-grid tracker abstraction."""
