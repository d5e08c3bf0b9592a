"""samenoise's library under test: kernels, denoisers, samplers, the optimal denoiser, noise."""
