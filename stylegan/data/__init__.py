"""Datasets: reading user image folders, writing WebDataset shards, and reading shards for training/evaluation."""
