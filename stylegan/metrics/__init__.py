"""Image-quality metrics: FID/KID on detector features and the weight-free sliced Wasserstein distance."""
