"""Benchmarks for plait: echo apps, a picows load client and the runner that compares them."""
