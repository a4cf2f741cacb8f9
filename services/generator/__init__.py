"""Generator workers: processes that run channel tickers and publish their rows."""
