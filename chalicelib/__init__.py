"""Sluice: a Chalice service whose writes travel through Firehose and S3."""
