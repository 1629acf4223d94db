"""Data contracts: trace bundles, arrival traces, scenarios and run outputs, with their readers,
writers and validation. Nothing here imports torch."""
