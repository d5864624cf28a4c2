"""The `saga` command-line client."""
