"""Thin client examples: the `saga` CLI (Python) and a Node.js client."""
