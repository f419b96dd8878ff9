"""pydantic models at the edges: API payloads (basware, bc) and queue messages (messages)."""
