"""Thin argparse front-ends; the work lives in the topic subpackages."""
