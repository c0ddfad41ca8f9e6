"""A GitHub-compatible test server."""
