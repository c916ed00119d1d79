"""`python -m jobs <job> [args]`: the same as `stylegan <job> [args]`."""

from jobs.cli import main

main()
