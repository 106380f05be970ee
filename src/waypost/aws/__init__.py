"""Entry points run by AWS itself (the Lambda handler)."""
