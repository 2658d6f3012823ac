"""Models: architectures, the zoo and safe checkpoint loading, the one training loop, teachers, feature extraction."""
