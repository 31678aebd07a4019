"""Where trial records come from: API v2 JSON, rendered text pages, files, the live registry."""
