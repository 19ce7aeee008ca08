"""The sealroom command (placeholder until the CLI lands)."""


def main() -> int:
    """Entry point of the sealroom command."""
    return 0
