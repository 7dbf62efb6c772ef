"""Command-line tools: msrp-send and msrp-listen (msrp-mi lives in mi_client)."""
