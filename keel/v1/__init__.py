"""Generated from proto/keel/v1 by `make proto`; do not edit."""
