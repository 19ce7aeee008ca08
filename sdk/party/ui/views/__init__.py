"""The pages, one module each: room, budgets, approvals (pending bundles, review, the
confirmation and the signature), runs (receipts, results, downloads) and metrics."""
