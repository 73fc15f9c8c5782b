"""dermsynth: raw dermoscopy archives → GANs → synthetic data → classifiers, as one workflow."""

__version__ = "0.1.0"
