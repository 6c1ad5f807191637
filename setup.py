"""wtal_tf: weakly-supervised temporal action localization with background modeling."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
TEST_ONLY = ("pytest", "jax", "moto", "flask", "gcp-storage-emulator")  # the test suite's:
# pytest, JAX for the second Keras backend, moto's S3 server (with flask, flask-cors) for OUT
# on s3:// and a GCS emulator for OUT on gs://
REQUIREMENTS = [line.split("==")[0] for line in (HERE / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(TEST_ONLY)]

setup(
    name="wtal_tf",
    version="0.1.0",
    description="Weakly-supervised action localization with background modeling "
                "(Nguyen, Ramanan, Fowlkes, ICCV 2019) in TensorFlow/Keras",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["wtal_tf", "wtal_tf.*"]),
    python_requires=">=3.11",
    install_requires=REQUIREMENTS,
)
