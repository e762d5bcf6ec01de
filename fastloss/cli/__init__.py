"""The `fastloss` command line (argparse only): `main` in `fastloss.cli.main`, one module per
command group. Nothing in the library imports this package."""
