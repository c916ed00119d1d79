"""Thin command-line entry points (`python -m jobs.<name>`): parse arguments, call into `stylegan`."""
