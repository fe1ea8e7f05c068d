"""spidernet_ray: hardware-aware neural architecture search on Ray Tune."""
