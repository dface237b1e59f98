"""Packages of the wheel: bike_cli and its subpackages, and the top-level lexicons/ folder as the
package-data folder bike_cli/lexicons (built-in lexicons work from an installed wheel; the phrase
files keep one source). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bike_cli", "bike_cli.*"]), "bike_cli.lexicons"],
    package_dir={"bike_cli.lexicons": "lexicons"},
)
