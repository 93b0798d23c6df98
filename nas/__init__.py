"""vitnas: neural-architecture search for vision transformers and CNN/ViT hybrids."""
