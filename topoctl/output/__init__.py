"""Output: plans and state for people and as JSON, and the shell-script renderer with its templates."""
