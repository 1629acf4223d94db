"""The measurement harness: train the offline zoo, time and evaluate variants, serve for real."""
