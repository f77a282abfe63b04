"""keelctl, the operator CLI."""
