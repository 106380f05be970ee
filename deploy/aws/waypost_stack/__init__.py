"""Waypost's AWS stack as code (AWS CDK v2); see docs/deploy-aws.md."""
