"""Delivery: where a decided file belongs and the crash-safe move that puts it there."""
