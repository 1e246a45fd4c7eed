"""Package discovery only; metadata lives in pyproject.toml.

tasks/ and configs/ sit at the repository's top level (one file per task, one Hydra config tree) but
install as ``seqmamba.tasks`` and ``seqmamba.configs`` (see ``package-dir`` in pyproject.toml).
"""
from setuptools import find_packages, setup

packages = find_packages(include=["seqmamba", "seqmamba.*"])
packages += ["seqmamba.tasks" + ("." + p if p else "") for p in [""] + find_packages("tasks")]
packages += ["seqmamba.configs"]
setup(packages=packages)
